//! External programs in tests: find an installed client (or fail the test with the install hint),
//! run it with captured output under a time limit, and poll a condition with a deadline instead
//! of sleeping. Shared by every test that drives real processes.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a missing client's failure message tells the reader to do.
pub const INSTALL_HINT: &str = "run scripts/install-deps.sh (as root) to install the registry clients these tests use";

/// The full path of `bin` on PATH, or a failing test that says how to install it.
pub fn need(bin: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(bin);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{bin}` is not installed (not found on PATH): {INSTALL_HINT}");
}

/// A Command for a client binary that must be installed (stdin closed).
pub fn tool(bin: &str) -> Command {
    let mut cmd = Command::new(need(bin));
    cmd.stdin(Stdio::null());
    cmd
}

/// How a command run by [`exec`] ended.
pub struct Output {
    /// Exited with status 0 within the time limit.
    pub ok: bool,
    /// The exit status, or that the command was killed at the time limit.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// [`exec`] for a command that must succeed: a failure panics with its status, the tails of its
/// output and `context()` (the logs of the nodes it talked to). Returns stdout.
pub fn exec_ok(cmd: &mut Command, limit: Duration, context: impl FnOnce() -> String) -> String {
    let out = exec(cmd, limit);
    assert!(
        out.ok,
        "{cmd:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}\n{}",
        out.status,
        tail(&out.stdout, 8000),
        tail(&out.stderr, 8000),
        context()
    );
    out.stdout
}

/// Runs `cmd` with stdout/stderr captured (in anonymous temp files, so no pipe can fill up) and a
/// time limit; a command still running at the limit is killed and reported as failed.
pub fn exec(cmd: &mut Command, limit: Duration) -> Output {
    let mut out_file = tempfile::tempfile().expect("temp file");
    let mut err_file = tempfile::tempfile().expect("temp file");
    cmd.stdout(Stdio::from(out_file.try_clone().unwrap()));
    cmd.stderr(Stdio::from(err_file.try_clone().unwrap()));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &mut fs::File| {
        let mut s = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut s).unwrap();
        String::from_utf8_lossy(&s).into_owned()
    };
    Output {
        ok: status.map(|s| s.success()).unwrap_or(false),
        status: match status {
            Some(s) => s.to_string(),
            None => format!("killed after the {} s time limit", limit.as_secs()),
        },
        stdout: read(&mut out_file),
        stderr: read(&mut err_file),
    }
}

/// Polls `probe` until it returns Ok or the deadline passes (then panics with the last error).
pub fn wait_until(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: not ready after {} s; last error: {e}", limit.as_secs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The last `max` bytes of `text` (at a character boundary): log excerpts for failure messages.
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// One request with `curl` whose body (if any) is of `content_type`, optionally with Basic
/// credentials `user:secret`: the status and the answer parsed as JSON (a string when it is
/// not JSON).
pub fn curl_json(
    method: &str,
    url: &str,
    body: Option<&str>,
    content_type: &str,
    basic: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut cmd = tool("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .args(["-H", &format!("Content-Type: {content_type}")]);
    if let Some(basic) = basic {
        cmd.args(["-u", basic]);
    }
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    cmd.arg(url);
    let out = exec(&mut cmd, Duration::from_secs(120));
    assert!(out.ok, "curl {method} {url}: {}", out.stderr);
    let (text, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let value = serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()));
    (code.trim().parse().unwrap_or(0), value)
}

/// A management call to `http://{host}{path}` with an optional JSON body: the status and the
/// answer as JSON.
pub fn api_json(method: &str, host: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    curl_json(
        method,
        &format!("http://{host}{path}"),
        body.as_deref(),
        "application/json",
        None,
    )
}

/// [`api_json`] that must succeed (2xx); the answer.
pub fn api_json_ok(method: &str, host: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let (status, value) = api_json(method, host, path, body);
    assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
    value
}
