//! The `eddy` binary: parses the command line and hands it to [`eddy::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Errors carry no backtrace, even with RUST_BACKTRACE set for panics: an error's text
        // can reach a guest (wasi's `to-debug-string`), which must not learn the host's
        // internals, and capturing one on every failed call costs CPU.
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
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
