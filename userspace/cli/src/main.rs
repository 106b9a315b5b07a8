//! `cma`: the command-line face of `/dev/cma`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Single-copy cross-process memory transfer through /dev/cma"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the loaded module's ABI version and features.
    Info,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cma: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> Result<(), Box<dyn std::error::Error>> {
    let dev = cma::Device::open()?;
    let info = dev.info()?;
    println!("device:       {}", cma::DEVICE_PATH);
    println!(
        "abi version:  {} (this library: {})",
        info.abi_version,
        cma::sys::CMA_ABI_VERSION
    );
    println!("max iovecs:   {}", info.max_iov);
    println!("features:     {:#x}", info.features);
    Ok(())
}
