//! The `carafe` binary; everything happens in `carafe::cli`.

/// mimalloc instead of the system allocator: request handling allocates and frees many small
/// buffers on every worker thread, and glibc's malloc spent about a fifth of the CPU of a
/// download benchmark in its own bookkeeping (`scripts/bench/files`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    carafe::cli::main()
}
