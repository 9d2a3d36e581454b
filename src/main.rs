//! `fs2`: the filestorage2 command line.
mod cli;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = cli::Cli::parse();
    if let Err(f) = cli::run(args) {
        if !f.message.is_empty() {
            eprintln!("fs2: {}", f.message);
        }
        std::process::exit(f.code);
    }
}
