//! The `nap` binary: parses the command line and runs it (see [`nap::cli`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    match nap::cli::Cli::parse_invocation(std::env::args_os().collect()) {
        Ok(cli) => nap::cli::main(cli),
        // --help and --version, and a bare `nap`: what clap prints, status 0.
        Err(err)
            if !err.use_stderr() || err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", nap::usage::one_line(&err, "nap"));
            ExitCode::FAILURE
        }
    }
}
