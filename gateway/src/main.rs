//! The `nap` binary: parses the command line and runs it (see [`nap::cli`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    nap::cli::main(nap::cli::Cli::parse())
}
