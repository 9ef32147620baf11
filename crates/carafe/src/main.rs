//! The `carafe` binary; everything happens in `carafe::cli`.

fn main() -> std::process::ExitCode {
    carafe::cli::main()
}
