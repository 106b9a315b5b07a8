//! `cma`: the command-line face of `/dev/cma`.

use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::process::{Command as Process, ExitCode, Stdio};

use cma::{Device, RemoteIoVec, Target};

mod bench;

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
    /// Copy a message out of another process and a reply back into it.
    Demo {
        /// The message the other process holds.
        #[arg(default_value = "Hello from another address space, in one copy!")]
        message: String,
    },
    /// Measure bandwidth against process_vm_readv, the double copy and memcpy.
    Bench(bench::Options),
    /// (internal) The other process of `cma demo`.
    #[command(hide = true)]
    DemoTarget { message: String },
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Demo { message } => demo(&message),
        Command::DemoTarget { message } => demo_target(message),
        Command::Bench(o) => bench::run(o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cma: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> Result {
    let dev = Device::open()?;
    let info = dev.info()?;
    println!("device:       {}", cma::DEVICE_PATH);
    println!(
        "abi version:  {} (this library: {})",
        info.abi_version,
        cma::sys::CMA_ABI_VERSION
    );
    println!("max iovecs:   {}", info.max_iov);
    let names = [
        (cma::sys::CMA_FEAT_COPY, "copy"),
        (cma::sys::CMA_FEAT_PIDFD, "pidfd"),
        (cma::sys::CMA_FEAT_GRANT, "grant"),
        (cma::sys::CMA_FEAT_PROBE, "probe"),
    ];
    let have: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| info.features & *bit as u64 != 0)
        .map(|(_, n)| *n)
        .collect();
    println!("features:     {:#x} ({})", info.features, have.join(", "));
    Ok(())
}

/// Starts a second process holding `message`, reads it with one copy,
/// writes a reply into it, and shows what the other process then sees.
fn demo(message: &str) -> Result {
    let dev = Device::open()?;
    let mut child = Process::new(std::env::current_exe()?)
        .args(["demo-target", message])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id() as i32;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("no pipe")?);
    let mut line = String::new();
    from_child.read_line(&mut line)?;
    let mut words = line
        .split_whitespace()
        .map(|w| usize::from_str_radix(w.trim_start_matches("0x"), 16));
    let (addr, len) = match (words.next(), words.next()) {
        (Some(Ok(a)), Some(Ok(l))) => (a, l),
        _ => return Err(format!("unexpected line from the target: {line:?}").into()),
    };
    println!("process {pid} holds {len} bytes at {addr:#x}");

    dev.probe(Target::Pid(pid))?;
    let mut buf = vec![0u8; len];
    let n = dev.process_vm_readv(
        Target::Pid(pid),
        &mut [IoSliceMut::new(&mut buf)],
        &[RemoteIoVec { base: addr, len }],
    )?;
    println!(
        "read  {n} bytes with one copy: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let reply = b"Got it.";
    let n = dev.process_vm_writev(
        Target::Pid(pid),
        &[IoSlice::new(reply)],
        &[RemoteIoVec {
            base: addr,
            len: reply.len(),
        }],
    )?;
    println!("wrote {n} bytes back into process {pid}");

    drop(child.stdin.take()); // tell it we are done
    line.clear();
    from_child.read_line(&mut line)?;
    print!("process {pid} now holds: {line}");
    child.wait()?;
    Ok(())
}

/// The other process: holds the message, consents to its parent, waits.
fn demo_target(message: String) -> Result {
    let dev = Device::open()?;
    // Consent to copies by the demo (our parent) only.
    dev.grant(Some(std::os::unix::process::parent_id() as i32))?;
    let buf = message.into_bytes();
    println!("{:#x} {:#x}", buf.as_ptr() as usize, buf.len());
    std::io::stdout().flush()?;
    // Wait until the demo closes our stdin, then show our buffer.
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    // SAFETY: the buffer was only written by the kernel through /dev/cma
    // while we were blocked; read it through a volatile view so the
    // compiler does not assume it unchanged.
    let now: Vec<u8> = (0..buf.len())
        .map(|i| unsafe { std::ptr::read_volatile(buf.as_ptr().add(i)) })
        .collect();
    println!("{:?}", String::from_utf8_lossy(&now));
    Ok(())
}
