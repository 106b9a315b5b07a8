//! A real second process for the tests: a forked child that sets up memory,
//! reports values (addresses, lengths) over a pipe, and answers one-byte
//! commands until the parent hangs up or kills it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use crate::ktap::Failure;

/// The parent's handle on a child process; kills and reaps it on drop.
pub struct Peer {
    /// The child's pid.
    pub pid: i32,
    cmd: Option<File>,
    reply: File,
    reaped: bool,
}

/// The child's end of the conversation.
pub struct Child {
    cmd: File,
    reply: File,
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn write_vals(f: &mut File, vals: &[u64]) -> io::Result<()> {
    let mut msg = Vec::with_capacity(8 * (vals.len() + 1));
    msg.extend_from_slice(&(vals.len() as u64).to_ne_bytes());
    for v in vals {
        msg.extend_from_slice(&v.to_ne_bytes());
    }
    f.write_all(&msg)
}

fn read_vals(f: &mut File) -> io::Result<Vec<u64>> {
    let mut word = [0u8; 8];
    f.read_exact(&mut word)?;
    let n = u64::from_ne_bytes(word) as usize;
    (0..n)
        .map(|_| {
            f.read_exact(&mut word)?;
            Ok(u64::from_ne_bytes(word))
        })
        .collect()
}

impl Peer {
    /// Forks a child that runs `body`. `body` usually prepares memory, calls
    /// [`Child::send`] with what the parent needs, then [`Child::serve`].
    pub fn spawn(body: impl FnOnce(Child) -> Result<(), Failure>) -> io::Result<Peer> {
        let (cmd_r, cmd_w) = pipe()?;
        let (reply_r, reply_w) = pipe()?;
        // SAFETY: the suite is single-threaded when it forks.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop((cmd_w, reply_r));
            let code = match body(Child {
                cmd: cmd_r,
                reply: reply_w,
            }) {
                Ok(()) => 0,
                Err(Failure::Skip(why)) => {
                    println!("# peer skipped: {why}");
                    crate::ktap::KSFT_SKIP
                }
                Err(Failure::Fail(why)) => {
                    println!("# peer: {why}");
                    1
                }
            };
            let _ = io::stdout().flush();
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(code) };
        }
        Ok(Peer {
            pid,
            cmd: Some(cmd_w),
            reply: reply_r,
            reaped: false,
        })
    }

    /// Receives the next values the child sent.
    pub fn recv(&mut self) -> io::Result<Vec<u64>> {
        read_vals(&mut self.reply)
    }

    /// Sends command `c` with arguments `args` and returns the child's answer.
    pub fn command(&mut self, c: u8, args: &[u64]) -> io::Result<Vec<u64>> {
        let cmd = self.cmd.as_mut().expect("child hung up");
        cmd.write_all(&[c])?;
        write_vals(cmd, args)?;
        self.recv()
    }

    /// Sends command `c` (no arguments) without waiting for an answer.
    pub fn command_no_reply(&mut self, c: u8) -> io::Result<()> {
        let cmd = self.cmd.as_mut().expect("child hung up");
        cmd.write_all(&[c])?;
        write_vals(cmd, &[])
    }

    /// Hangs up and waits for the child; returns its exit code.
    pub fn finish(mut self) -> io::Result<i32> {
        self.cmd = None;
        self.reaped = true;
        crate::util::wait_child(self.pid)
    }

    /// Receives the next values the child sends within `limit`: `None` if
    /// none came by then (the child may be stuck in the kernel).
    pub fn recv_within(&mut self, limit: Duration) -> io::Result<Option<Vec<u64>>> {
        let mut pfd = libc::pollfd {
            fd: self.reply.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: polls one live descriptor.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            1 => self.recv().map(Some),
            0 => Ok(None),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Reaps the child if it has ended within `limit`; says whether it has.
    pub fn reaped_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: polls our own child; `status` is a valid out-pointer.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
                self.reaped = true;
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child (SIGKILL) without reaping it: it stays a zombie until
    /// this `Peer` is dropped.
    pub fn kill(&self) {
        // SAFETY: plain syscall.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = crate::util::wait_child(self.pid);
        }
    }
}

impl Child {
    /// Sends values to the parent.
    pub fn send(&mut self, vals: &[u64]) -> io::Result<()> {
        write_vals(&mut self.reply, vals)
    }

    /// Answers commands with `handler(command, args)` until the parent hangs up.
    pub fn serve(
        mut self,
        mut handler: impl FnMut(u8, &[u64]) -> io::Result<Vec<u64>>,
    ) -> Result<(), Failure> {
        let mut c = [0u8];
        loop {
            match self.cmd.read(&mut c)? {
                0 => return Ok(()),
                _ => {
                    let args = read_vals(&mut self.cmd)?;
                    let vals = handler(c[0], &args)?;
                    self.send(&vals)?;
                }
            }
        }
    }

    /// Waits until the parent hangs up.
    pub fn wait(self) -> Result<(), Failure> {
        self.serve(|_, _| Ok(vec![]))
    }
}
