//! `walrus-loadtest`: drive a gateway (or any aggregator-compatible URL) with a checked,
//! measured load. Everything but argument parsing lives in the library (`loadtest::cli`).

fn main() -> std::process::ExitCode {
    loadtest::cli::main()
}
