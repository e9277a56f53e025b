//! The `eddy` binary: parses the command line and hands it to [`eddy::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = eddy::cli::Cli::parse();
    if !matches!(cli.command, eddy::cli::Command::Up(_)) {
        // A command whose output is piped into `head` ends quietly when the pipe closes, as
        // command-line tools do, instead of panicking on the failed write. A host keeps Rust's
        // default (ignore SIGPIPE): its sockets report a closed peer as an error.
        // SAFETY: restoring a signal's default action before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    cli.run()
}
