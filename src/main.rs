fn main() -> std::process::ExitCode {
    neurodex::cli::main()
}
