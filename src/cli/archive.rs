//! Archive commands: `restore`.

use super::*;

pub(super) fn restore(out: &mut impl Write, mut paths: Vec<PathBuf>, check_only: bool) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let target = match check_only {
        true => None,
        false if paths.len() >= 2 => paths.pop(),
        false => return Err(fail(2, "give one or more sources and the new storage directory (or --check)")),
    };
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Error);
    }
    let mut p = Progress::new("verify");
    let r = backup::restore(&paths, target.as_deref(), &mut |d, t| p.update(d, t))?;
    drop(p);
    for (name, piece, bytes) in &r.chain {
        w(writeln!(out, "chain:     {name} {bytes:>12}  {}", piece.display()))?;
    }
    for (piece, why) in &r.unused {
        w(writeln!(out, "unused:    {} ({why})", piece.display()))?;
    }
    for x in r.unusable.iter().chain(&r.notes) {
        w(writeln!(out, "note:      {x}"))?;
    }
    for x in &r.check.problems {
        w(writeln!(out, "problem:   {}", x.replace('\n', " ")))?;
    }
    w(writeln!(
        out,
        "verified {} segments, {} transactions, {} records, {}; last tid {}",
        r.check.segments,
        r.check.transactions,
        r.check.records,
        human(r.check.bytes),
        r.last_tid
    ))?;
    if !r.check.ok() {
        return Err(fail(5, format!("damaged: {} problem(s); nothing restored", r.check.problems.len())));
    }
    match (&target, r.restored) {
        (Some(t), true) => w(writeln!(out, "restored into {} (verified)", t.display())),
        _ => w(writeln!(out, "ok")),
    }
}
