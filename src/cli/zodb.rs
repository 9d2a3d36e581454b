//! ZODB-aware commands: `analyze`, `refs`, `check --refs`, `gc`.

use super::*;

/// Progress of a ZODB scan on stderr (a terminal only).
pub(super) fn phase_progress(p: &mut Progress) -> impl FnMut(filestorage2::zodb::gc::Phase, u64, u64) + '_ {
    move |ph, done, total| {
        p.what = match ph {
            filestorage2::zodb::gc::Phase::Scan => "reading objects",
            filestorage2::zodb::gc::Phase::Mark => "marking reachable objects",
        };
        p.update_count(done, total)
    }
}

pub(super) fn analyze(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let mut p = Progress::new("reading objects");
    let hist = filestorage2::zodb::scan::class_histogram(&s, Tid::MAX, &mut |n| p.update_count(n, 0))?;
    drop(p);
    let (count, bytes) = hist.iter().fold((0, 0), |a, c| (a.0 + c.count, a.1 + c.bytes));
    w(writeln!(out, "current objects as of {}: {count}, {bytes} bytes", s.last_tid()))?;
    w(writeln!(out, "{:<50} {:>10} {:>6} {:>14} {:>6} {:>10}", "Class Name", "Count", "%", "Bytes", "%", "Avg"))?;
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    for c in &hist {
        w(writeln!(
            out,
            "{:<50} {:>10} {:>5.1}% {:>14} {:>5.1}% {:>10}",
            c.class,
            c.count,
            pct(c.count, count),
            c.bytes,
            pct(c.bytes, bytes),
            c.bytes / c.count.max(1)
        ))?;
    }
    Ok(())
}

pub(super) fn refs(out: &mut impl Write, dir: &Path, oid: Oid) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let at = s.last_tid();
    let Some((tid, data)) = s.load_at(oid, at)? else {
        return Err(fail(3, format!("oid {oid} does not exist (or is deleted); `fs2 history` lists its revisions")));
    };
    match filestorage2::zodb::read_record(&data) {
        Ok(r) => {
            w(writeln!(out, "{oid} class={} tid={tid}", r.class))?;
            w(writeln!(out, "references ({}):", r.refs.len()))?;
            for x in &r.refs {
                let gone = if s.load_at(x.oid, at)?.is_none() && x.is_strong() { " MISSING" } else { "" };
                w(writeln!(out, "  {x}{gone}"))?;
            }
        }
        Err(e) => w(writeln!(out, "{oid} tid={tid}: {e}"))?,
    }
    let mut p = Progress::new("reading objects");
    let from = filestorage2::zodb::scan::referrers(&s, oid, at, &mut |n| p.update_count(n, 0))?;
    drop(p);
    w(writeln!(out, "referenced by ({}):", from.len()))?;
    for (o, r) in &from {
        let kind = r.to_string();
        let kind = kind.strip_prefix(&oid.to_string()).unwrap_or("");
        w(writeln!(out, "  {o}{kind}"))?;
    }
    Ok(())
}

pub(super) fn check_refs(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let mut p = Progress::new("reading objects");
    // Problems as found (at most 1000 lines shown; all counted).
    let lines = std::cell::RefCell::new(Vec::new());
    let note = |l: String| {
        let mut v = lines.borrow_mut();
        if v.len() < 1000 {
            v.push(l);
        }
    };
    let r = filestorage2::zodb::scan::dangling(
        &s,
        s.last_tid(),
        &mut phase_progress(&mut p),
        &mut |from, to| note(format!("problem: dangling reference: oid {from} references {to}, which does not exist")),
        &mut |oid, why| note(format!("problem: not a ZODB record: oid {oid}: {why}")),
    )?;
    drop(p);
    for l in lines.borrow().iter() {
        w(writeln!(out, "{l}"))?;
    }
    w(writeln!(
        out,
        "references: {} objects, {} references, {} dangling, {} not ZODB records",
        r.objects, r.references, r.dangling, r.unreadable
    ))?;
    if r.dangling > 0 || r.unreadable > 0 {
        w(writeln!(out, "damaged: {} problem(s) in {}", r.dangling + r.unreadable, dir.display()))?;
        return Err(fail(5, ""));
    }
    Ok(())
}

pub(super) fn gc(out: &mut impl Write, dir: &Path, dry_run: bool) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = if dry_run { open_ro(dir)? } else { open_rw(dir)? };
    let mut p = Progress::new("reading objects");
    let mut listed = Vec::new();
    let mut io_err = None;
    let report = filestorage2::zodb::gc::collect(
        &s,
        filestorage2::zodb::gc::GcOptions {
            dry_run,
            on_garbage: &mut |oid| {
                if dry_run {
                    if let Err(e) = writeln!(out, "{oid}") {
                        io_err.get_or_insert(e);
                    }
                } else {
                    listed.push(oid);
                }
            },
            progress: &mut phase_progress(&mut p),
            before_commit: &mut || {},
        },
    )?;
    drop(p);
    if let Some(e) = io_err {
        return Err(fail(1, format!("writing output: {e}")));
    }
    let summary = format!(
        "{} objects as of {}: {} reachable, {} garbage{}",
        report.objects,
        report.base,
        report.reachable,
        report.garbage,
        if report.unreadable_garbage > 0 {
            format!(" ({} of them not ZODB records)", report.unreadable_garbage)
        } else {
            String::new()
        }
    );
    match report.tid {
        Some(tid) => w(writeln!(out, "{summary}; deleted in transaction {tid}"))?,
        None if dry_run => eprintln!("{summary} (dry run: nothing deleted)"),
        None => w(writeln!(out, "{summary}; nothing to delete"))?,
    }
    Ok(())
}
