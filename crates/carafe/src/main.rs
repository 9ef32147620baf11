//! The `carafe` binary; everything happens in `carafe::cli`.

/// jemalloc instead of the system allocator: small downloads allocate and free a few dozen
/// small objects each, often on different threads (the audit writer frees what request
/// handlers made), where glibc's arenas contend and consolidate (`scripts/bench/files`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    carafe::cli::main()
}
