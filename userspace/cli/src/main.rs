//! `cma`: the command-line face of `/dev/cma`.

use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::process::{Command as Process, ExitCode, Stdio};

use cma::{Device, RemoteIoVec, Target};

mod bench;
mod doctor;

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
    /// Run a command with libcma-preload.so, so that its process_vm_readv
    /// and process_vm_writev calls go through /dev/cma.
    ///
    /// The command and everything it starts inherit LD_PRELOAD. For MPI,
    /// pass it to the ranks: `cma run -- mpirun -x LD_PRELOAD ...` (Open
    /// MPI), `cma run -- mpiexec -genvlist LD_PRELOAD ...` (MPICH), or set
    /// LD_PRELOAD=/path/libcma-preload.so yourself (`cma run --print`).
    Run(RunOptions),
    /// Will single copy work for an MPI job started here? Checks the
    /// module, the device and whether you may open it, Yama, seccomp, user
    /// namespaces and the MPI libraries' own settings, and copies between
    /// two sibling processes (as two ranks) with process_vm_readv and
    /// through /dev/cma. Says why not, and the least-privileged fix. Exits
    /// 0 when single copy through /dev/cma works, 1 otherwise.
    Doctor {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// (internal) The other process of `cma demo`.
    #[command(hide = true)]
    DemoTarget { message: String },
    /// (internal) The target of `cma doctor`'s copy.
    #[command(hide = true)]
    DoctorTarget,
    /// (internal) The reader of `cma doctor`'s copy.
    #[command(hide = true)]
    DoctorReader { pid: i32, addr: String, len: String },
}

#[derive(clap::Args)]
struct RunOptions {
    /// At exit, each process reports its calls (through /dev/cma, fallen
    /// back to the system call, failed) on stderr, or appended to FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "stderr")]
    stats: Option<String>,
    /// Do not consent to reads by every peer the credential rule allows;
    /// only prctl(PR_SET_PTRACER) and CAP_SYS_PTRACE open a process.
    #[arg(long)]
    no_grant: bool,
    /// Make /dev/cma's EPERM final instead of trying the system call.
    #[arg(long)]
    no_fallback: bool,
    /// The preload library (default: found next to this program or in the
    /// system's library directories).
    #[arg(long, value_name = "PATH")]
    preload: Option<std::path::PathBuf>,
    /// Print the library's path and exit.
    #[arg(long)]
    print: bool,
    /// The command to run.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Where libcma-preload.so is: beside the build tree's `out/lib`, the
/// installed `../lib`, or the system's library directories.
fn find_preload() -> Option<std::path::PathBuf> {
    const NAME: &str = "libcma-preload.so";
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let candidates = [
        dir.join("../lib").join(NAME),
        dir.join("../lib/x86_64-linux-gnu").join(NAME),
        // userspace/target/release/cma in the source tree
        dir.join("../../../out/lib").join(NAME),
        std::path::PathBuf::from("/usr/local/lib").join(NAME),
        std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu").join(NAME),
        std::path::PathBuf::from("/usr/lib").join(NAME),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}

/// `cma run`: exec the command with the preload library in LD_PRELOAD.
fn run(o: RunOptions) -> Result {
    use std::os::unix::process::CommandExt;
    let lib = match o.preload {
        Some(p) => p,
        None => find_preload().ok_or("libcma-preload.so not found (give --preload PATH)")?,
    };
    if o.print {
        println!("{}", lib.display());
        return Ok(());
    }
    let (prog, args) = o.command.split_first().ok_or("no command given")?;
    let mut preload = lib.display().to_string();
    if let Ok(old) = std::env::var("LD_PRELOAD") {
        if !old.is_empty() {
            preload = format!("{preload}:{old}");
        }
    }
    let mut cmd = Process::new(prog);
    cmd.args(args).env("LD_PRELOAD", preload);
    if let Some(to) = o.stats {
        cmd.env("CMA_PRELOAD_STATS", to);
    }
    if o.no_grant {
        cmd.env("CMA_PRELOAD_GRANT", "0");
    }
    if o.no_fallback {
        cmd.env("CMA_PRELOAD_FALLBACK", "0");
    }
    Err(format!("{prog}: {}", cmd.exec()).into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Demo { message } => demo(&message),
        Command::DemoTarget { message } => demo_target(message),
        Command::Bench(o) => bench::run(o),
        Command::Run(o) => run(o),
        Command::Doctor { json } => match doctor::doctor(json) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::DoctorTarget => doctor::target(),
        Command::DoctorReader { pid, addr, len } => doctor::reader(pid, &addr, &len),
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
    // Every bit by its name (one table, cma::Features::NAMED, checked
    // against CMA_FEAT_ALL), and any bit this program does not know in hex.
    let mut have: Vec<String> = info.features.names().map(String::from).collect();
    let unknown = info.features.unknown();
    if unknown != 0 {
        have.push(format!("unknown {unknown:#x}"));
    }
    println!(
        "features:     {:#x} ({})",
        info.features.bits(),
        have.join(", ")
    );
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
