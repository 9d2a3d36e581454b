//! Reading commands: `info`, `ls`, `dump`, `check`.

use super::*;

pub(super) fn info(out: &mut impl Write, dir: &Path, count: bool) -> Result<(), Failure> {
    // An archive: where its history starts, and the copies its chain does not use, are
    // lines of the output here.
    let (s, unused) = if backup::is_archive(dir) {
        let a = backup::Archive::new(&[dir.to_path_buf()])?;
        (a.open()?, a.plan.unused.into_iter().map(|(p, why)| format!("{} ({why})", p.display())).collect())
    } else {
        (Storage::open(dir, Options::read_only())?, Vec::new())
    };
    let segs = s.segments()?;
    let st = s.stats()?;
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    w(writeln!(out, "storage:      {}", dir.display()))?;
    if backup::is_archive(dir) {
        w(writeln!(out, "archive:      copied segments, opened read-only (`fs2 restore` makes a storage of them)"))?;
    }
    if let Some(note) = backup::history_note(&s)? {
        w(writeln!(out, "history:      {note}"))?;
    }
    for u in unused {
        w(writeln!(out, "not used:     {u}"))?;
    }
    for p in s.strays() {
        w(writeln!(
            out,
            "stray file:   {} (not in the chain; ignored; `fs2 check --repair` moves it aside)",
            p.display()
        ))?;
    }
    if let Some(t) = s.ignored_tail() {
        w(writeln!(
            out,
            "ignored tail: {} bytes at offset {} of {} ({})",
            t.bytes,
            t.offset,
            t.segment.display(),
            t.reason
        ))?;
    }
    w(writeln!(
        out,
        "last tid:     {} ({})",
        st.last_tid,
        if st.last_tid == Tid::ZERO { "empty".into() } else { st.last_tid.iso8601() }
    ))?;
    w(writeln!(out, "max oid:      {}", st.max_oid.map_or("-".into(), |o| o.to_string())))?;
    if count {
        w(writeln!(out, "objects:      {}", s.count_objects()?))?;
    }
    w(writeln!(out, "transactions: {}", st.transactions))?;
    w(writeln!(out, "records:      {}", st.records))?;
    w(writeln!(out, "bytes:        {} ({})", st.bytes, human(st.bytes)))?;
    w(writeln!(out, "retention:    {}", s.retention()))?;
    w(writeln!(out, "segments:     {} (oldest first)", segs.len()))?;
    w(writeln!(
        out,
        "  {:<18} {:<6} {:<16} {:<16} {:>8} {:>9} {:>12}  path",
        "name", "state", "first tid", "last tid", "txns", "records", "bytes"
    ))?;
    for g in &segs {
        w(writeln!(
            out,
            "  {:<18} {:<6} {:<16} {:<16} {:>8} {:>9} {:>12}  {}",
            g.name.to_string(),
            if g.state == SegmentState::Active { "active" } else { "past" },
            tid_or_none(g.first_tid),
            tid_or_none(g.last_tid),
            g.transactions,
            g.records,
            g.bytes,
            g.path.display()
        ))?;
        for a in &g.appended {
            let kept = match a.as_of {
                AsOf::Source => "as of its end: time travel to it is exact",
                AsOf::Target => "as current at this segment's end",
            };
            w(writeln!(
                out,
                "    + {:<14} appended {:<16} {:<16} {:>8} {:>9}  ({kept})",
                a.source.to_string(),
                tid_or_none(a.first_tid),
                tid_or_none(a.last_tid),
                a.transactions,
                a.records,
            ))?;
        }
    }
    let archive = dir.join("archive");
    let mut archived: Vec<(String, u64)> = std::fs::read_dir(&archive)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    SegmentName::from_file_name(&name)?;
                    // A chain segment moved there (move-segment) is not archived.
                    if segs.iter().any(|g| std::fs::canonicalize(&g.path).ok() == std::fs::canonicalize(e.path()).ok())
                    {
                        return None;
                    }
                    Some((name, e.metadata().ok()?.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    archived.sort();
    if !archived.is_empty() {
        let total: u64 = archived.iter().map(|(_, n)| n).sum();
        w(writeln!(
            out,
            "archived:     {} in {}, {total} bytes ({}) (merged away; each is a complete segment; \
             `fs2 archive prune` deletes them)",
            archived.len(),
            archive.display(),
            human(total)
        ))?;
        for (name, len) in archived {
            w(writeln!(out, "  {name:<24} {len:>12}"))?;
        }
    }
    Ok(())
}

pub(super) fn dump(out: &mut impl Write, dir: &Path, from: Option<Tid>, to: Option<Tid>) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let total: u64 = s.segments()?.iter().map(|g| g.data_end).sum();
    let mut done = 0;
    let mut p = Progress::new("dump");
    let mut reader = filestorage2::zodb::Reader::new();
    let mut damaged = 0;
    for (i, t) in s.transactions(from.unwrap_or(Tid::ZERO), to.unwrap_or(Tid::MAX)).enumerate() {
        // A damaged transaction (fault containment) is named on stderr; the dump goes on
        // after it and exits 5. Any other error ends it.
        let t = match t {
            Ok(t) => t,
            Err(e) if e.is_corruption() => {
                drop(std::mem::replace(&mut p, Progress::new("dump")));
                eprintln!("fs2: {e}");
                damaged += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        done += t.records.iter().map(|r| 48 + r.1.as_ref().map_or(0, |d| d.len() as u64)).sum::<u64>();
        p.update(done, total);
        w(writeln!(
            out,
            "Trans #{i:05} tid={} time={} segment={} offset={}",
            t.tid,
            t.tid.iso8601(),
            t.segment,
            t.offset
        ))?;
        let ext = if t.meta.extension.is_empty() {
            String::new()
        } else {
            format!(" extension='{}'", escape(&t.meta.extension))
        };
        w(writeln!(out, "    user='{}' description='{}'{ext}", escape(&t.meta.user), escape(&t.meta.description)))?;
        for (j, (oid, data)) in t.records.iter().enumerate() {
            match data {
                Some(d) => {
                    let class =
                        reader.read(d).map_or_else(|_| "? (not a ZODB record)".to_string(), |(c, _)| c.to_string());
                    w(writeln!(out, "  data #{j:05} oid={oid} size={} class={class}", d.len()))?
                }
                None => w(writeln!(out, "  data #{j:05} oid={oid} deleted"))?,
            }
        }
    }
    if damaged > 0 {
        return Err(fail(5, format!("{damaged} damaged transaction(s) not shown; run `fs2 check {}`", dir.display())));
    }
    Ok(())
}

pub(super) fn ls(out: &mut impl Write, dir: &Path, at: Option<Tid>) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    packed(&s, at)?;
    let at = at.unwrap_or(Tid::MAX);
    // Damaged objects (fault containment) are named on stderr and the rest is
    // listed; then exit 5.
    let mut damaged = 0usize;
    for o in s.objects(Oid(0), at) {
        match o? {
            Listed::Live(o) => w(writeln!(out, "{}  {:>10}  {}", o.oid, o.size, o.tid))?,
            Listed::Damaged(oid, e) => {
                eprintln!("fs2: damaged: {oid}: {}", e.detail());
                damaged += 1;
            }
        }
    }
    // Objects only a damaged transaction holds are in no index: name them too.
    for d in s.damaged_transactions() {
        let oids = match &d.oids {
            Some(o) => o.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(" "),
            None => "unknown (any object may be affected)".into(),
        };
        eprintln!("fs2: damaged transaction at offset {} of the active segment; its objects: {oids}", d.start);
        damaged += 1;
    }
    if damaged > 0 {
        return Err(fail(5, format!("damaged objects are not listed; run `fs2 check {}`", dir.display())));
    }
    Ok(())
}

/// `fs2 check`: everything on stdout, one line each: `salvaged: ...`, `repaired: ...`,
/// `problem: ...`, the counts, then `ok` or `damaged: ...`.
pub(super) fn check_cmd(
    out: &mut impl Write,
    dir: &Path,
    repair: bool,
    salvage: bool,
    refs: bool,
) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    // Everything on stdout, one line each: `salvaged: ...`, `repaired: ...`,
    // `problem: ...`, the counts, then `ok` or `damaged: ...`. An error that is not damage
    // (no storage there, no access) is one line on stderr, exit 3 or 1.
    // What the opens warn about is in the report (one line each): not again on
    // stderr, unless RUST_LOG asks for it.
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Error);
    }
    let one_line = |x: &str| x.replace('\n', " ");
    if salvage {
        backup::refuse_writable(dir)?;
    }
    let salvaged = match salvage {
        true => filestorage2::check::salvage(dir, Options::default())
            .map_err(|e| Failure { code: exit_code(&e), message: e.to_string() })?,
        false => Vec::new(),
    };
    for x in &salvaged {
        w(writeln!(out, "salvaged: {}", one_line(x)))?;
    }
    let mut p = Progress::new("check");
    // An archive is checked as it is (read-only; never repaired in place).
    // Copied segment directories are checked against their copied info too.
    let (cdir, copts, unusable) = if backup::is_archive(dir) {
        if repair {
            backup::refuse_writable(dir)?;
        }
        let a = backup::Archive::with(&[dir.to_path_buf()], true)?;
        if let Some((_, line)) = &a.plan.missing {
            w(writeln!(out, "note: older segments not present: {line}"))?;
        }
        (a.dir, a.opts, a.unusable)
    } else {
        (dir.to_path_buf(), Options::default(), Vec::new())
    };
    let mut r = check(&cdir, repair, copts, &mut |d, t| p.update(d, t))
        .map_err(|e| Failure { code: exit_code(&e), message: e.to_string() })?;
    r.problems.extend(unusable);
    drop(p);
    for x in &r.repaired {
        w(writeln!(out, "repaired: {}", one_line(x)))?;
    }
    for x in &r.problems {
        w(writeln!(out, "problem: {}", one_line(x)))?;
    }
    w(writeln!(
        out,
        "checked {} segments, {} transactions, {} records, {}",
        r.segments,
        r.transactions,
        r.records,
        human(r.bytes)
    ))?;
    if !r.ok() {
        w(writeln!(out, "damaged: {} problem(s) in {}", r.problems.len(), dir.display()))?;
        return Err(fail(5, ""));
    }
    if refs {
        check_refs(out, dir)?;
    }
    if !salvaged.is_empty() {
        // The storage is whole again, but something was moved aside or lost.
        w(writeln!(
            out,
            "damaged: {} item(s) salvaged in {} (listed above); the storage takes writes again",
            salvaged.len(),
            dir.display()
        ))?;
        return Err(fail(5, ""));
    }
    w(writeln!(out, "ok"))?;
    Ok(())
}
