//! `fs2`: the filestorage2 command line. Its modules (`cli.rs`, `bench/`) are the
//! binary's, not the library's.
mod bench;
mod cli;

use clap::Parser;

fn main() {
    // fuser warns when it unmounts at the end of a session whose mount `fs2 umount`
    // already removed: that is the normal end, not a problem.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .filter_module("fuser::session", log::LevelFilter::Error)
        .init();
    let args = cli::Cli::parse();
    if !args.is_mount() {
        // A closed stdout (`fs2 info DIR | head -2`) ends the command quietly, as in
        // coreutils (the mount daemon keeps ignoring SIGPIPE).
        // SAFETY: restoring the default action of a signal touches no memory.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(f) = cli::run(args) {
        if !f.message.is_empty() {
            eprintln!("fs2: {}", f.message);
        }
        std::process::exit(f.code);
    }
}
