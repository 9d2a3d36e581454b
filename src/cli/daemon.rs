//! The mount daemon and the demo storage: `mount`, `demo`.

use super::*;

pub(super) fn mount(
    storage: &Path,
    mp: &Path,
    mopts: &filestorage2::fuse::MountOptions,
    init: bool,
    force: bool,
) -> Result<(), Failure> {
    let read_only = mopts.read_only;
    let empty = !storage.exists() || std::fs::read_dir(storage).map(|mut d| d.next().is_none()).unwrap_or(false);
    if empty && storage == Path::new(DEMO_DIR) {
        build_demo(storage)?;
        println!("created the demo storage {} (6 transactions in 2 segments)", storage.display());
    } else if empty && init {
        filestorage2::mount::owner_only_dir(storage).map_err(|m| fail(1, m))?;
        Storage::create(storage, Options::default())?;
        println!("created an empty storage in {}", storage.display());
    } else if empty {
        return Err(fail(3, format!("no storage in {}: create one with --init (or `fs2 init`)", storage.display())));
    }
    filestorage2::mount::prepare_mountpoint(mp, force).map_err(|m| fail(1, m))?;
    let s = if read_only { backup::open_read_only(storage)? } else { open_rw(storage)? };
    let m = mp.display();
    let fs2 = std::env::args().next().unwrap_or_else(|| "fs2".into());
    // Hints that work on this storage: objects only if it has some, writes only if writable.
    let mut hints = format!("  ls {m}\n  cat {m}/head/at\n  ls -l {m}/head\n");
    if let Some(o) = s.list(Oid(0), Tid::MAX, 1)?.first() {
        hints += &format!("  cat {m}/head/{}\n  ls {m}/history/{}\n  cat {m}/transactions/*/info\n", o.oid, o.oid);
        hints += &format!("  T=$(cat {m}/head/at); ls -l {m}/@$T       # one snapshot, pinned\n");
    }
    hints += &format!("  cp -a {m}/segments/seg-000001 /tmp/    # a segment and its info: a backup\n");
    if !read_only {
        hints += &format!(
            "  mkdir {m}/txn/t; echo hello > {m}/txn/t/0000000000000009; echo commit > {m}/txn/t/ctl\n  \
             cat {m}/head/0000000000000009\n"
        );
    }
    hints += &format!("  cat {m}/README                # the tree and how writing works");
    filestorage2::mount::run(s, mp, mopts, || {
        println!(
            "mounted {} at {m} ({}); Ctrl-C or `{fs2} umount {m}` unmounts.\nTry, in another terminal:\n{hints}",
            storage.display(),
            if read_only { "read-only snapshot" } else { "writable: mkdir txn/NAME to begin a transaction" }
        );
    })
    .map_err(|msg| fail(1, msg))?;
    println!("unmounted {m}");
    Ok(())
}

/// Create the demo storage in `dir`: six transactions in two segments.
pub(super) fn build_demo(dir: &Path) -> Result<(), Failure> {
    let s = Storage::create(dir, Options::default())?;
    let mut t = s.begin();
    t.set_user(b"demo");
    t.set_description(b"initial objects");
    t.store(Oid(0), b"root: {'greeting': <oid 0000000000000001>, 'counter': <oid 0000000000000002>}")?;
    t.store(Oid(1), b"hello, world\n")?;
    t.store(Oid(2), b"0")?;
    t.commit()?;
    for i in 1..=3 {
        let mut t = s.begin();
        t.set_user(b"demo");
        t.set_description(format!("increment counter to {i}").as_bytes());
        t.store(Oid(2), i.to_string().as_bytes())?;
        t.commit()?;
    }
    s.rotate()?;
    let mut t = s.begin();
    t.set_user(b"gc");
    t.set_description(b"store oid 3, soon unreachable");
    t.store(Oid(3), b"garbage")?;
    t.commit()?;
    let mut t = s.begin();
    t.set_user(b"gc");
    t.set_description(b"external garbage collector: delete unreachable oid 3");
    t.delete(Oid(3))?;
    t.commit()?;
    Ok(())
}

pub(super) fn demo(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let fresh = !dir.exists() || std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    if fresh {
        build_demo(dir)?;
        w(writeln!(out, "created demo storage {} with 6 transactions in 2 segments\n", dir.display()))?;
    }
    w(writeln!(out, "$ fs2 info {}", dir.display()))?;
    info(out, dir, true)?;
    w(writeln!(out, "\n$ fs2 dump {}", dir.display()))?;
    dump(out, dir, None, None)?;
    let d = dir.display();
    w(writeln!(
        out,
        "\nTry:\n  fs2 ls {d}\n  fs2 cat {d} 0000000000000001\n  fs2 history {d} 0000000000000002\n  \
         echo new > /tmp/x && fs2 commit {d} 0000000000000001=/tmp/x --user me\n  fs2 check {d}\n  \
         fs2 mount {d} fs2-mnt    # browse it as files; Ctrl-C unmounts\n\
         (fs2 is target/release/fs2; or use `cargo run --release -- <command>`)"
    ))?;
    Ok(())
}
