//! The `eddy` binary: parses the command line and hands it to [`eddy::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    eddy::cli::Cli::parse().run()
}
