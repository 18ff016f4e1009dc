//! `ebb lb serve POOL.toml` as a stand-alone binary, for the benchmark (so it does not
//! need the whole `ebb` binary built).

fn main() {
    let Some(pool) = std::env::args_os().nth(1) else {
        eprintln!("usage: lb_serve POOL.toml");
        std::process::exit(2);
    };
    let code = ebb_lb::cli::run(ebb_lb::cli::LbCommand::Serve { pool: pool.into() });
    std::process::exit(code);
}

/// As the `ebb` binary: tokio's 128-byte-aligned blocks without `posix_memalign`.
#[global_allocator]
static ALLOCATOR: ebb_lb::allocator::Malloc = ebb_lb::allocator::Malloc;
