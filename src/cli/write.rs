//! Writing commands: `commit`, `merge`, `undo`.

use super::*;

pub(super) fn merge(out: &mut impl Write, a: MergeArgs) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let policy = if a.all {
        Policy::All
    } else if a.policy {
        Policy::KeepAtMost(a.keep)
    } else {
        Policy::Named(a.segments)
    };
    let strategy = match a.append {
        None => Strategy::Copy,
        Some(AppendAsOf::SourceEnd) => Strategy::Append(AsOf::Source),
        Some(AppendAsOf::TargetEnd) => Strategy::Append(AsOf::Target),
    };
    let s = open_rw(&a.dir)?;
    let Some(h) = s.start_merge_with(&policy, strategy)? else {
        let n = s.past_segment_stats()?.len();
        return w(writeln!(out, "nothing to merge ({n} past segments)"));
    };
    let mut p = Progress::new("merge");
    while !h.is_finished() {
        let pr = &h.progress;
        p.update(pr.bytes_done.load(Ordering::Relaxed), pr.bytes_total.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(p);
    let r = h.wait()?;
    let c = &r.counts;
    let names: Vec<String> = r.inputs.iter().map(|n| n.to_string()).collect();
    w(writeln!(out, "merged {} into {} in {:.2} s", names.join(" "), r.output, r.seconds))?;
    if let Strategy::Append(as_of) = strategy {
        let how = match as_of {
            AsOf::Source => "each source's newest records",
            AsOf::Target => "records current at the target's end",
        };
        w(writeln!(out, "  appended:     {how} to {}, whose own records stay in place", r.output))?;
        w(writeln!(out, "  bytes:        {} in the sources, {} appended", human(c.bytes_in), human(c.bytes_out)))?;
    } else {
        w(writeln!(out, "  bytes:        {} before, {} after", human(c.bytes_in), human(c.bytes_out)))?;
    }
    w(writeln!(
        out,
        "  records:      {} before, {} after ({} dropped; {} deletions dropped with their objects)",
        c.records_in,
        c.records_out,
        c.records_in - c.records_out,
        c.deletions_dropped
    ))?;
    w(writeln!(out, "  transactions: {} before, {} after", c.transactions_in, c.transactions_out))?;
    for p in &r.archived {
        w(writeln!(out, "  archived:     {}", p.display()))?;
    }
    Ok(())
}

pub(super) fn commit(out: &mut impl Write, a: CommitArgs) -> Result<(), Failure> {
    if a.stores.is_empty() && a.deletes.is_empty() {
        return Err(fail(2, "nothing to commit: give OID=FILE pairs and/or --delete OID"));
    }
    // Read every input before touching the storage: bad input changes nothing.
    let mut stores = Vec::new();
    for pair in &a.stores {
        let (oid, file) =
            pair.split_once('=').ok_or_else(|| fail(2, format!("{pair:?}: expected OID=FILE (or new=FILE)")))?;
        let oid = if oid == "new" { None } else { Some(oid.parse::<Oid>().map_err(|e| fail(2, e.to_string()))?) };
        let data = if file == "-" {
            let mut d = Vec::new();
            std::io::stdin().read_to_end(&mut d).map_err(|e| fail(1, format!("reading stdin: {e}")))?;
            d
        } else {
            std::fs::read(file).map_err(|e| fail(1, format!("reading {file}: {e}")))?
        };
        stores.push((oid, data));
    }
    let s = open_rw(&a.dir)?;
    let mut t = s.begin();
    if let Some(b) = a.base {
        if b > s.last_tid() {
            return Err(fail(2, format!("--base {b} is newer than the last transaction {}", s.last_tid())));
        }
        t = filestorage2::Transaction::at(&s, b);
    }
    t.set_user(a.user.as_bytes());
    t.set_description(a.description.as_bytes());
    t.set_extension(a.extension.as_bytes());
    // Chosen oids first, so that "new" never allocates one of them.
    for (oid, data) in &stores {
        if let Some(oid) = oid {
            t.store(*oid, data)?;
        }
    }
    let mut allocated = Vec::new();
    for (_, data) in stores.iter().filter(|(oid, _)| oid.is_none()) {
        let o = s.new_oid()?;
        allocated.push(o);
        t.store(o, data)?;
    }
    for oid in &a.deletes {
        t.delete(*oid)?;
    }
    let tid = t.commit()?;
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    for o in allocated {
        w(writeln!(out, "new oid {o}"))?;
    }
    w(writeln!(out, "committed {tid}"))?;
    Ok(())
}

pub(super) fn undo(out: &mut impl Write, dir: &Path, tid: Tid) -> Result<(), Failure> {
    let s = open_rw(dir)?;
    let mut t = s.begin();
    let oids = t.undo(tid).map_err(|e| match e {
        Error::Conflict { oid, tid: newer } => fail(
            4,
            format!("cannot undo {tid}: object {oid} was changed after it (by transaction {newer}); nothing written"),
        ),
        e => e.into(),
    })?;
    t.set_user(b"fs2 undo");
    t.set_description(format!("undo {tid}").as_bytes());
    let new = t.commit()?;
    writeln!(out, "undid {tid}: {} objects restored in transaction {new}", oids.len())
        .map_err(|e| fail(1, format!("writing output: {e}")))
}
