//! CLI tests: the real `fs2` binary, its output and exit codes.

mod common;

use common::segment_files;
use std::path::Path;
use std::process::{Command, Output};

fn fs2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fs2")).args(args).env("RUST_LOG", "warn").output().expect("run fs2")
}

fn ok(args: &[&str]) -> String {
    let o = fs2(args);
    assert!(o.status.success(), "fs2 {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn code(args: &[&str]) -> (i32, String) {
    let o = fs2(args);
    (o.status.code().unwrap(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `fs2 init` of `dir`, then three commits of object 1 (from the file `payload`);
/// their tids, as `fs2 commit` prints them.
fn three_commits(dir: &Path, payload: &Path) -> Vec<String> {
    let d = dir.to_str().unwrap();
    ok(&["init", d]);
    std::fs::write(payload, b"payload").unwrap();
    let mut tids = Vec::new();
    for _ in 0..3 {
        let out = ok(&["commit", d, &format!("0000000000000001={}", payload.display())]);
        tids.push(out.trim().strip_prefix("committed ").unwrap().to_string());
    }
    tids
}

#[test]
fn offline_workflow() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    assert!(ok(&["init", d]).contains("seg-000001"));
    let f1 = t.path().join("a");
    std::fs::write(&f1, b"alpha").unwrap();
    let f2 = t.path().join("b");
    std::fs::write(&f2, b"").unwrap();
    let pair = |oid: &str, f: &Path| format!("{oid}={}", f.display());
    let out =
        ok(&["commit", d, &pair("0000000000000001", &f1), &pair("new", &f2), "--user", "me", "--description", "first"]);
    assert!(out.contains("new oid 0000000000000002"), "{out}");
    let tid1 = out.lines().last().unwrap().strip_prefix("committed ").unwrap().to_string();
    assert_eq!(ok(&["cat", d, "0000000000000001"]), "alpha");
    assert_eq!(ok(&["cat", d, "0000000000000002"]), "", "empty objects are objects");
    std::fs::write(&f1, b"beta").unwrap();
    ok(&["rotate", d]);
    let out = ok(&["commit", d, &pair("0000000000000001", &f1), "--delete", "0000000000000002"]);
    let tid2 = out.trim().strip_prefix("committed ").unwrap().to_string();
    assert_eq!(ok(&["cat", d, "0000000000000001"]), "beta");
    assert_eq!(ok(&["cat", d, "0000000000000001", "--at", &tid1]), "alpha");
    assert_eq!(code(&["cat", d, "0000000000000002"]).0, 3);
    let h = ok(&["history", d, "0000000000000002"]);
    assert!(h.lines().next().unwrap().starts_with(&tid2) && h.contains("deleted"), "{h}");
    let ls = ok(&["ls", d]);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(ls.starts_with("0000000000000001"));
    assert_eq!(ok(&["ls", d, "--at", &tid1]).lines().count(), 2);
    let dump = ok(&["dump", d]);
    assert!(dump.contains("user='me' description='first'") && dump.contains("oid=0000000000000002 deleted"), "{dump}");
    assert_eq!(ok(&["dump", d, "--from", &tid2]).matches("Trans #").count(), 1);
    let info = ok(&["info", d]);
    assert!(info.contains("objects:      1") && info.contains("seg-000001") && info.contains("past"), "{info}");
    assert!(ok(&["check", d]).contains("ok"));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("db");
    let d = d.to_str().unwrap();
    ok(&["init", d]);
    let before: Vec<_> = segment_files(Path::new(d)).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(code(&["cat", d, "1"]).0, 2, "non-canonical oid spelling");
    assert_eq!(code(&["cat", d, "000000000000000G"]).0, 2);
    let (c, err) = code(&["commit", d, "0000000000000001=/no/such/file"]);
    assert_eq!(c, 1);
    assert!(err.contains("/no/such/file"), "{err}");
    assert_eq!(code(&["commit", d, "garbage"]).0, 2);
    assert_eq!(code(&["commit", d]).0, 2);
    assert_eq!(code(&["init", d]).0, 1, "init refuses an existing storage");
    let (c, err) = code(&["info", "/nonexistent/storage"]);
    assert_eq!(c, 3);
    assert!(err.contains("fs2 init"), "{err}");
    let after: Vec<_> = segment_files(Path::new(d)).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(code(&["--help"]).0, 0);
    assert!(ok(&["commit", "--help"]).contains("OID=FILE"));
}

#[test]
fn stale_base_conflicts() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("db");
    let d = d.to_str().unwrap();
    ok(&["init", d]);
    let f = t.path().join("x");
    std::fs::write(&f, b"1").unwrap();
    let p = format!("0000000000000007={}", f.display());
    let tid1 = ok(&["commit", d, &p]).trim().strip_prefix("committed ").unwrap().to_string();
    ok(&["commit", d, &p]);
    let (c, err) = code(&["commit", d, &p, "--base", &tid1]);
    assert_eq!(c, 4, "{err}");
    assert!(err.contains("conflict on oid 0000000000000007"), "{err}");
}

#[test]
fn check_finds_damage_and_repair_fixes_a_torn_tail() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let f = t.path().join("x");
    let tids = three_commits(&dir, &f);
    let active = segment_files(&dir).pop().unwrap();
    let good = std::fs::read(&active).unwrap();

    // The data ends before the zeros the writer preallocates: the last transaction ends
    // with its (non-zero) length.
    let end = (good.iter().rposition(|&b| b != 0).unwrap() + 1).div_ceil(8) * 8;
    assert!(good[end..].iter().all(|&b| b == 0));

    // A torn tail: part of a transaction written after the data.
    let mut torn = good.clone();
    torn[end..end + 60].copy_from_slice(&good[4096..4096 + 60]);
    std::fs::write(&active, &torn).unwrap();
    let (c, _) = code(&["check", d]);
    assert_eq!(c, 5, "check reports the torn tail");
    assert!(std::fs::read(&active).unwrap() == torn, "check without --repair changes nothing");
    let out = ok(&["check", d, "--repair"]);
    assert!(out.contains("repaired:") && out.contains("ok"), "{out}");
    assert!(std::fs::read(&active).unwrap() == good[..end], "repair cuts the torn tail");
    let kept = std::path::PathBuf::from(format!("{}.dropped-{end}", active.display()));
    // The dropped bytes are kept, without the zeros after them (preallocated space).
    let torn_bytes = &good[4096..4096 + 60];
    let data = torn_bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert_eq!(std::fs::read(&kept).unwrap(), torn_bytes[..data], "the dropped bytes are kept");
    let good = good[..end].to_vec();

    // A flipped byte inside committed data (the first transaction): detected, never
    // returned; the damage costs that transaction only (the current revision is intact).
    let mut bad = good.clone();
    bad[4096 + 100] ^= 0x20;
    std::fs::write(&active, &bad).unwrap();
    assert_eq!(code(&["check", d]).0, 5);
    assert_eq!(code(&["cat", d, "0000000000000001", "--at", &tids[0]]).0, 5);
    assert_eq!(ok(&["cat", d, "0000000000000001"]), "payload");
}

/// A protocol-3 ZODB record of class `m.C` whose state is a list of strong references
/// (as ZODB writes them: oid, or (oid, class)).
fn zodb_record(refs: &[u64]) -> Vec<u8> {
    let mut d = b"\x80\x03cm\nC\nq\x00.\x80\x03]q\x01(".to_vec();
    for (i, o) in refs.iter().enumerate() {
        d.extend_from_slice(b"C\x08");
        d.extend_from_slice(&o.to_be_bytes());
        if i % 2 == 1 {
            d.extend_from_slice(b"h\x00\x86");
        }
        d.push(b'Q');
    }
    d.extend_from_slice(b"e.");
    d
}

#[test]
fn zodb_commands_gc_analyze_refs_check_refs_and_dump_classes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    ok(&["init", d]);
    let mut pairs = Vec::new();
    // 0 -> 1, 2; 1 -> 3 and the missing 77; 4 -> 1 is garbage; 5 is not a ZODB record.
    for (oid, data) in [
        (0u64, zodb_record(&[1, 2])),
        (1, zodb_record(&[3, 0x77])),
        (2, zodb_record(&[])),
        (3, zodb_record(&[])),
        (4, zodb_record(&[1])),
        (5, b"<oid 0000000000000004>".to_vec()),
    ] {
        let f = t.path().join(format!("o{oid}"));
        std::fs::write(&f, data).unwrap();
        pairs.push(format!("{oid:016x}={}", f.display()));
    }
    let args: Vec<&str> = ["commit", d].into_iter().chain(pairs.iter().map(String::as_str)).collect();
    ok(&args);

    let dump = ok(&["dump", d]);
    assert!(dump.contains("oid=0000000000000000 size=") && dump.contains("class=m.C"), "{dump}");
    assert!(dump.contains("class=? (not a ZODB record)"), "{dump}");
    let a = ok(&["analyze", d]);
    assert!(a.contains("current objects") && a.lines().any(|l| l.starts_with("m.C ") && l.contains(" 5 ")), "{a}");
    assert!(a.contains("(not a ZODB record)"), "{a}");
    let r = ok(&["refs", d, "0000000000000001"]);
    assert!(r.contains("references (2):") && r.contains("0000000000000077 class=m.C MISSING"), "{r}");
    assert!(r.contains("referenced by (2):") && r.contains("  0000000000000000\n  0000000000000004\n"), "{r}");
    assert_eq!(code(&["refs", d, "0000000000000099"]).0, 3);

    let (c, _) = code(&["check", d, "--refs"]);
    assert_eq!(c, 5, "dangling references fail check --refs");
    let o = fs2(&["check", d, "--refs"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("problem: dangling reference: oid 0000000000000001 references 0000000000000077"), "{out}");
    assert!(out.contains("problem: not a ZODB record: oid 0000000000000005"), "{out}");
    assert_eq!(code(&["check", d]).0, 0, "without --refs only the bytes are checked");

    let dry = ok(&["gc", d, "--dry-run"]);
    assert_eq!(dry, "0000000000000004\n0000000000000005\n");
    assert_eq!(ok(&["ls", d]).lines().count(), 6, "a dry run deletes nothing");
    let out = ok(&["gc", d]);
    assert!(
        out.contains("6 objects") && out.contains("4 reachable, 2 garbage") && out.contains("deleted in transaction"),
        "{out}"
    );
    let ls = ok(&["ls", d]);
    let oids: Vec<&str> = ls.lines().map(|l| &l[..16]).collect();
    assert_eq!(oids, ["0000000000000000", "0000000000000001", "0000000000000002", "0000000000000003"]);
    assert!(ok(&["gc", d]).contains("nothing to delete"));

    // The demo storage is not a ZODB database: gc refuses, deletes nothing.
    let demo = t.path().join("demo");
    ok(&["demo", demo.to_str().unwrap()]);
    let (c, err) = code(&["gc", demo.to_str().unwrap()]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("not a ZODB record") && err.contains("nothing was collected"), "{err}");
}

#[test]
fn merge_move_and_retention_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    ok(&["init", d, "--retention", "full"]);
    let f = t.path().join("x");
    for i in 0..3 {
        std::fs::write(&f, format!("v{i}")).unwrap();
        ok(&[
            "commit",
            d,
            &format!("0000000000000001={}", f.display()),
            &format!("000000000000000{}={}", i + 2, f.display()),
        ]);
        ok(&["rotate", d]);
    }
    assert_eq!(code(&["merge", d]).0, 2, "say what to merge");
    assert_eq!(code(&["merge", d, "seg-000001", "seg-000003"]).0, 1, "not adjacent");
    assert_eq!(code(&["merge", d, "seg-000001", "seg-000042"]).0, 3, "unknown segment");
    let out = ok(&["merge", d, "seg-000001.fs2", "seg-000002"]);
    assert!(out.contains("into seg-000001-000002") && out.contains("archived:"), "{out}");
    assert!(dir.join("archive/seg-000001.fs2").exists());
    let info = ok(&["info", d]);
    assert!(info.contains("archived:     2") && info.contains("seg-000001-000002"), "{info}");
    assert!(ok(&["merge", d, "--policy", "--keep", "1"]).contains("into seg-000001-000003"));
    assert!(ok(&["merge", d, "--all"]).contains("nothing to merge"));
    assert_eq!(ok(&["cat", d, "0000000000000001"]), "v2");
    assert_eq!(ok(&["history", d, "0000000000000001"]).lines().count(), 1, "history merged away");
    let away = t.path().join("away");
    let out = ok(&["move-segment", d, "seg-000001-000003", away.to_str().unwrap()]);
    assert!(out.contains("moved seg-000001-000003"), "{out}");
    assert!(away.join("seg-000001-000003.fs2").exists());
    assert_eq!(ok(&["cat", d, "0000000000000003"]), "v1");
    assert!(ok(&["check", d]).contains("ok"));
    assert_eq!(ok(&["retention", d]).trim(), "retention: full");
    ok(&["retention", d, "minimal"]);
    assert!(ok(&["info", d]).contains("retention:    minimal"));
    assert_eq!(code(&["retention", d, "some"]).0, 2);
}

/// `fs2` run in `cwd` (for relative paths).
fn fs2_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fs2"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fs2")
}

fn ok_in(cwd: &Path, args: &[&str]) -> String {
    let o = fs2_in(cwd, args);
    assert!(o.status.success(), "fs2 {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn move_segment_onto_itself_with_a_relative_path_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    std::fs::write(cwd.join("x"), b"x").unwrap();
    ok_in(cwd, &["init", "e"]);
    ok_in(cwd, &["commit", "e", "0000000000000001=x"]);
    ok_in(cwd, &["rotate", "e"]);
    let seg = cwd.join("e/seg-000001.fs2");
    let before = std::fs::read(&seg).unwrap();
    let o = fs2_in(cwd, &["move-segment", "e", "seg-000001", "e"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("already lives in"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), before, "the only copy is untouched");
    assert_eq!(ok_in(cwd, &["cat", "e", "0000000000000001"]), "x");
    ok_in(cwd, &["commit", "e", "0000000000000002=x"]);
    assert!(ok_in(cwd, &["check", "e"]).ends_with("ok\n"));
}

#[test]
fn move_segment_out_by_absolute_path_and_back_by_relative_path_keeps_the_segment() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    std::fs::write(cwd.join("x"), b"x").unwrap();
    ok_in(cwd, &["init", "s"]);
    ok_in(cwd, &["commit", "s", "0000000000000001=x"]);
    ok_in(cwd, &["rotate", "s"]);
    let out = cwd.join("out");
    ok_in(cwd, &["move-segment", "s", "seg-000001", out.to_str().unwrap()]);
    assert!(out.join("seg-000001.fs2").exists() && !cwd.join("s/seg-000001.fs2").exists());
    ok_in(cwd, &["move-segment", "s", "seg-000001", "s"]);
    assert!(cwd.join("s/seg-000001.fs2").exists() && !out.join("seg-000001.fs2").exists());
    // The next writable opens keep it: it is the only copy.
    ok_in(cwd, &["commit", "s", "0000000000000002=x"]);
    ok_in(cwd, &["rotate", "s"]);
    assert!(cwd.join("s/seg-000001.fs2").exists());
    assert_eq!(ok_in(cwd, &["cat", "s", "0000000000000001"]), "x");
    assert!(ok_in(cwd, &["check", "s"]).ends_with("ok\n"));
}

#[test]
fn the_oid_space_ends_with_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    let d = d.to_str().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(&b, b"b").unwrap();
    ok(&["init", d]);
    ok(&["commit", d, &format!("ffffffffffffffff={}", a.display())]);
    for args in
        [vec![format!("new={}", b.display())], vec![format!("new={}", b.display()), format!("new={}", a.display())]]
    {
        let mut all = vec!["commit", d];
        all.extend(args.iter().map(|s| s.as_str()));
        let (c, err) = code(&all);
        assert_eq!(c, 1, "{err}");
        assert!(err.contains("oid space is exhausted") && err.lines().count() == 1, "{err}");
    }
    assert_eq!(ok(&["cat", d, "ffffffffffffffff"]), "a", "nothing overwritten");
    assert_eq!(code(&["cat", d, "0000000000000000"]).0, 3, "never wrapped to the root");
    assert_eq!(ok(&["ls", d]).lines().count(), 1);
}

#[test]
fn check_exit_codes_and_output_format() {
    let t = tempfile::tempdir().unwrap();
    // Not a storage: missing, a regular file, an empty directory: exit 3 with one line.
    let file = t.path().join("file");
    std::fs::write(&file, b"hello").unwrap();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = t.path().join("missing");
    for p in [&missing, &file, &empty] {
        for cmd in ["check", "info", "ls", "dump"] {
            let o = fs2(&[cmd, p.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "fs2 {cmd} {p:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(o.stdout.is_empty());
        }
    }
    assert_eq!(code(&["check", file.to_str().unwrap(), "--repair"]).0, 3);
    // Damage: one `problem:` line each and the summary, all on stdout; nothing nested,
    // no advice to run the command that is running.
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let f = t.path().join("x");
    let tids = three_commits(&dir, &f);
    let active = segment_files(&dir).pop().unwrap();
    let mut bad = std::fs::read(&active).unwrap();
    bad[4096 + 100] ^= 0x20;
    std::fs::write(&active, &bad).unwrap();
    // (Without RUST_LOG: the open's warnings are the report's lines, not again on stderr.)
    let o = Command::new(env!("CARGO_BIN_EXE_fs2")).args(["check", d]).env_remove("RUST_LOG").output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(5), "{out}{err}");
    assert!(err.is_empty(), "the summary is on stdout: {err}");
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert!(!problems.is_empty(), "{out}");
    assert_eq!(out.lines().last().unwrap(), format!("damaged: {} problem(s) in {d}", problems.len()));
    for l in out.lines() {
        assert!(l.matches("corrupted").count() <= 1 && l.matches(" at offset ").count() <= 2, "nested: {l}");
        assert!(!l.contains("run `fs2 check`"), "{l}");
    }
    // Other commands point at `fs2 check`, in one line.
    // (The damaged transaction is the first: a read as of it fails; the current revision
    // is intact, see `check_finds_damage_and_repair_fixes_a_torn_tail`.)
    // (RUST_LOG=warn also logs the damage the open found: not the error's lines.)
    let (c, all) = code(&["cat", d, "0000000000000001", "--at", &tids[0]]);
    assert_eq!(c, 5, "{all}");
    let err = all.lines().filter(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n");
    assert!(err.contains("fs2 check") && err.lines().count() == 1 && err.matches("corrupted").count() <= 1, "{all}");
    // Usage errors are 2; a busy storage 4.
    assert_eq!(code(&["check"]).0, 2);
    assert_eq!(code(&["frobnicate"]).0, 2);
    let lock = std::fs::File::open(dir.join("LOCK")).unwrap();
    lock.lock().unwrap();
    assert_eq!(code(&["commit", d, &format!("0000000000000002={}", f.display())]).0, 4);
    assert_eq!(code(&["rotate", d]).0, 4);
}

#[test]
fn stray_segment_files_do_not_take_the_storage_offline() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let f = t.path().join("x");
    std::fs::write(&f, b"x").unwrap();
    ok(&["init", d]);
    ok(&["commit", d, &format!("0000000000000001={}", f.display())]);
    ok(&["rotate", d]);
    std::fs::write(dir.join("seg-000009.fs2"), vec![0xA5u8; 5000]).unwrap();
    std::fs::write(dir.join("seg-000003.fs2"), b"").unwrap();
    assert_eq!(ok(&["cat", d, "0000000000000001"]), "x");
    ok(&["commit", d, &format!("0000000000000002={}", f.display())]);
    let info = ok(&["info", d]);
    assert!(info.contains("seg-000002") && info.matches("stray file:").count() == 2, "{info}");
    let o = Command::new(env!("CARGO_BIN_EXE_fs2")).args(["check", d]).env_remove("RUST_LOG").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("problem: ") && l.contains("--repair")).count(), 2, "{out}");
    assert!(o.stderr.is_empty(), "each problem once, on stdout: {}", String::from_utf8_lossy(&o.stderr));
    let out = ok(&["check", d, "--repair"]);
    assert_eq!(out.lines().filter(|l| l.contains("moved aside")).count(), 2, "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    assert_eq!(std::fs::read(dir.join("stray/seg-000009.fs2")).unwrap(), vec![0xA5u8; 5000]);
    assert!(dir.join("stray/seg-000003.fs2").exists());
    assert!(ok(&["check", d]).ends_with("ok\n"));
}

#[test]
fn an_unwritable_archive_refuses_the_merge_and_writers_go_on() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let f = t.path().join("x");
    std::fs::write(&f, b"x").unwrap();
    ok(&["init", d]);
    for _ in 0..2 {
        ok(&["commit", d, &format!("0000000000000001={}", f.display())]);
        ok(&["rotate", d]);
    }
    std::fs::write(dir.join("archive"), b"a file, not a directory").unwrap();
    let (c, err) = code(&["merge", d, "--all"]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("merge refused (nothing changed)") && err.contains("archive"), "{err}");
    ok(&["commit", d, &format!("0000000000000002={}", f.display())]);
    assert_eq!(ok(&["info", d]).matches(" past ").count(), 2, "the chain is unchanged");
    assert!(ok(&["check", d]).ends_with("ok\n"));
}

#[test]
fn read_only_commands_say_when_they_ignore_an_unreadable_tail() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::write(&a, b"first").unwrap();
    std::fs::write(&b, b"second").unwrap();
    ok(&["init", d]);
    ok(&["commit", d, &format!("0000000000000001={}", a.display())]);
    ok(&["commit", d, &format!("0000000000000001={}", b.display())]);
    let dump = ok(&["dump", d]);
    let off: u64 = dump.lines().filter_map(|l| l.split("offset=").nth(1)).next_back().unwrap().parse().unwrap();
    let active = segment_files(&dir).pop().unwrap();
    std::fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(off + 40).unwrap();
    for args in [vec!["cat", d, "0000000000000001"], vec!["ls", d], vec!["history", d, "0000000000000001"]] {
        let o = fs2(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("fs2: warning: ") && err.contains("ignored 40 unreadable bytes"), "{err}");
    }
    assert_eq!(ok(&["cat", d, "0000000000000001"]), "first");
    let info = ok(&["info", d]);
    assert!(info.contains(&format!("ignored tail: 40 bytes at offset {off}")), "{info}");
    assert_eq!(code(&["check", d]).0, 5);
}

/// A storage the user may not read: exit 1 (an error, not damage), one line.
#[test]
fn permission_denied_is_an_error_not_damage() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run fs2 as another user");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    ok(&["init", d]);
    for cmd in ["check", "info", "cat", "commit"] {
        let mut args = vec![cmd, d];
        if cmd == "cat" {
            args.push("0000000000000001");
        }
        if cmd == "commit" {
            args.push("0000000000000001=/dev/null");
        }
        let o = Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_fs2")])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "fs2 {args:?} as nobody: {err}");
        assert!(err.contains("Permission denied") && err.lines().count() == 1, "{err}");
    }
}

/// `fs2 cat --at` and `fs2 ls --at` inside a merged range say the history was packed
/// (not "did not exist").
#[test]
fn at_inside_a_packed_range_says_so() {
    use filestorage2::{merge::Policy, Oid, Options, Storage};
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let s = Storage::create(&dir, Options { sync: false, ..Options::default() }).unwrap();
    let mut tids = Vec::new();
    for i in 0..3u8 {
        let mut x = s.begin();
        x.store(Oid(1), &[i]).unwrap();
        tids.push(x.commit().unwrap());
    }
    s.rotate().unwrap();
    s.rotate().unwrap();
    s.merge(&Policy::All).unwrap().unwrap();
    drop(s);
    let (d, mid) = (dir.to_str().unwrap(), tids[1].to_string());
    for args in [vec!["cat", d, "0000000000000001", "--at", &mid], vec!["ls", d, "--at", &mid]] {
        let (c, err) = code(&args);
        assert_eq!(c, 3, "{args:?}");
        assert!(err.contains("was packed"), "{args:?}: {err}");
    }
    assert_eq!(ok(&["cat", d, "0000000000000001", "--at", &tids[2].to_string()]), "\u{2}");
}

#[test]
fn undo_restores_the_state_before_and_refuses_conflicts() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    ok(&["init", d, "--retention", "full"]);
    let commit = |pairs: &[(&str, &str)], extra: &[&str]| -> String {
        let mut args = vec!["commit".to_string(), d.to_string()];
        for (oid, v) in pairs {
            let p = t.path().join(format!("v-{oid}-{v}"));
            std::fs::write(&p, v).unwrap();
            args.push(format!("{oid}={}", p.display()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&a).lines().last().unwrap().strip_prefix("committed ").unwrap().trim().to_string()
    };
    const A: &str = "0000000000000001";
    const B: &str = "0000000000000002";
    const C: &str = "0000000000000003";
    let t1 = commit(&[(A, "a1"), (B, "b1")], &[]);
    ok(&["rotate", d]);
    let t2 = commit(&[(A, "a2"), (C, "c2")], &[]); // changes A, creates C
    let t3 = commit(&[(B, "b3")], &[]);
    // Undo t2: A back to a1, C deleted (it did not exist before t2); B untouched.
    let out = ok(&["undo", d, &t2]);
    assert!(out.contains("2 objects restored"), "{out}");
    assert_eq!(ok(&["cat", d, A]), "a1");
    assert_eq!(code(&["cat", d, C]).0, 3, "undoing a creation deletes the object");
    assert_eq!(ok(&["cat", d, B]), "b3");
    let log = ok(&["dump", d]);
    assert!(log.contains(&format!("undo {t2}")), "{log}");
    // Undo t1: B changed after it (t3), so it is refused with that oid, exit 4.
    let before = ok(&["dump", d]);
    let (c, err) = code(&["undo", d, &t1]);
    assert_eq!(c, 4, "{err}");
    assert!(err.contains(B) && err.contains(&t3), "{err}");
    assert_eq!(ok(&["dump", d]), before, "nothing written");
    // Unknown tid: exit 3.
    assert_eq!(code(&["undo", d, "00000000000000ff"]).0, 3);
    // Merge the first two segments: t1 (and t2) are then refused, exit 1.
    ok(&["rotate", d]);
    ok(&["merge", d, "seg-000001", "seg-000002"]);
    let (c, err) = code(&["undo", d, &t1]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("merged"), "{err}");
}
