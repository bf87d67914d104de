//! The `neurodex` command line: argument parsing, printing and exit codes over the
//! library's pipeline (`src/cli/`, one file per command). The library never calls
//! back into it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
