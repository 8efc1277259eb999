//! Run a server binary for a test: start it, read its output until a ready
//! line (e.g. `listening on 127.0.0.1:40123`), extract the address, and kill
//! it on drop. Output keeps being collected so failures can show it.

use crate::sync::lock;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1 (for programs that cannot
/// bind port 0 themselves; racy by nature, callers should retry on
/// "address in use").
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Find the first `ip:port` in a line (tokens split on blanks, quotes,
/// commas, `=` and brackets around IPv4; `[v6]:port` works too).
pub fn extract_addr(line: &str) -> Option<SocketAddr> {
    line.split(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '=' | '(' | ')' | '<' | '>')
    })
    .map(|t| t.trim_end_matches(['.', ';']))
    .find_map(|t| t.parse::<SocketAddr>().ok())
}

/// A child process that is killed (SIGKILL) and reaped on drop.
pub struct ServerProcess {
    child: Child,
    addr: Option<SocketAddr>,
    output: Arc<Mutex<Vec<String>>>,
}

fn forward_lines<R: Read + Send + 'static>(
    r: R,
    tag: &'static str,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<Vec<String>>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let mut l = lock(&log);
            if l.len() < 100_000 {
                l.push(format!("{tag}: {line}"));
            }
            // The receiver goes away once the process is ready; keep draining.
            let _ = tx.send(line);
        }
    });
}

impl ServerProcess {
    /// Spawn `cmd` (stdout and stderr captured) and wait up to `timeout` for
    /// a line containing `ready_pattern`. The address printed on that line,
    /// if any, is available from [`ServerProcess::addr`].
    pub fn spawn(mut cmd: Command, ready_pattern: &str, timeout: Duration) -> io::Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn()?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            forward_lines(out, "stdout", tx.clone(), output.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(err, "stderr", tx, output.clone());
        }
        let mut proc = ServerProcess {
            child,
            addr: None,
            output,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) if line.contains(ready_pattern) => {
                    proc.addr = extract_addr(&line);
                    return Ok(proc);
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process is gone or closed them.
                    let status = proc.child.wait()?;
                    return Err(io::Error::other(format!(
                        "process exited ({status}) before printing {ready_pattern:?}; output:\n{}",
                        proc.output().join("\n")
                    )));
                }
            }
            if let Some(status) = proc.child.try_wait()? {
                // Give the reader threads a moment to deliver the last lines.
                thread::sleep(Duration::from_millis(50));
                while let Ok(line) = rx.try_recv() {
                    if line.contains(ready_pattern) {
                        proc.addr = extract_addr(&line);
                        return Ok(proc);
                    }
                }
                return Err(io::Error::other(format!(
                    "process exited ({status}) before printing {ready_pattern:?}; output:\n{}",
                    proc.output().join("\n")
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no line containing {ready_pattern:?} within {timeout:?}; output:\n{}",
                        proc.output().join("\n")
                    ),
                ));
            }
        }
    }

    /// The address found on the ready line.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far, prefixed `stdout: ` / `stderr: `.
    pub fn output(&self) -> Vec<String> {
        lock(&self.output).clone()
    }

    /// What followed `prefix` on each stdout line printed so far that starts
    /// with it, in order (e.g. every `listening on ADDR` of a server with
    /// several portals).
    pub fn stdout_values(&self, prefix: &str) -> Vec<String> {
        self.output()
            .iter()
            .filter_map(|l| l.strip_prefix("stdout: ")?.strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    }

    /// Has the process exited? (`Some(status)` if so.)
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Ask the process to stop (SIGTERM via `kill`), wait up to `grace`,
    /// then SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> io::Result<std::process::ExitStatus> {
        self.stop_with("-TERM", grace)
    }

    /// [`ServerProcess::terminate`] with SIGINT (what Ctrl-C sends).
    pub fn interrupt(&mut self, grace: Duration) -> io::Result<std::process::ExitStatus> {
        self.stop_with("-INT", grace)
    }

    fn stop_with(&mut self, signal: &str, grace: Duration) -> io::Result<std::process::ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_lines() {
        let a: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(extract_addr("listening on 127.0.0.1:4242"), Some(a));
        assert_eq!(extract_addr("INFO addr=127.0.0.1:4242 ready"), Some(a));
        assert_eq!(extract_addr("listening on \"127.0.0.1:4242\"."), Some(a));
        assert_eq!(
            extract_addr("listening on [::1]:80").map(|a| a.port()),
            Some(80)
        );
        assert_eq!(extract_addr("no address here 127.0.0.1"), None);
    }

    #[test]
    fn waits_for_ready_line_and_kills_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting; echo 'listening on 127.0.0.1:5555' >&2; exec sleep 30",
        ]);
        let p = ServerProcess::spawn(cmd, "listening", Duration::from_secs(5)).unwrap();
        assert_eq!(p.addr(), Some("127.0.0.1:5555".parse().unwrap()));
        let pid = p.id();
        drop(p);
        // The process is reaped: /proc/<pid> is gone (or reused by another process).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map(|c| c.contains("sleep"))
            .unwrap_or(false);
        assert!(!alive, "child still running after drop");
    }

    #[test]
    fn early_exit_and_timeout_are_errors_with_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let e = ServerProcess::spawn(cmd, "listening", Duration::from_secs(5))
            .err()
            .unwrap();
        assert!(e.to_string().contains("boom"), "{e}");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo quiet; exec sleep 30"]);
        let e = ServerProcess::spawn(cmd, "listening", Duration::from_millis(300))
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("quiet"), "{e}");
    }

    #[test]
    fn terminate_is_graceful() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready; exec sleep 30"]);
        let mut p = ServerProcess::spawn(cmd, "ready", Duration::from_secs(5)).unwrap();
        let status = p.terminate(Duration::from_secs(2)).unwrap();
        assert!(!status.success());
    }
}
