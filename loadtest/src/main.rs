//! `walrus-loadtest`: the load generator arrives with issue 9. Until then the binary says so
//! and fails, rather than pretending to run a load.

fn main() {
    eprintln!("walrus-loadtest: not available yet (the load generator is issue 9)");
    std::process::exit(2);
}
