//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a part of the helpers

use std::process::Command;

/// Run the `rgshield` binary: (success, stdout, stderr).
pub fn rgshield(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rgshield"))
        .args(args)
        .output()
        .expect("run rgshield");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An `rgshield serve` child process listening on a free local port; killed when dropped.
pub struct Server {
    child: std::process::Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Server {
    /// Start `rgshield serve --addr 127.0.0.1:0 ARGS…` and wait for its address line.
    pub fn spawn(args: &[&str]) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_rgshield"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn rgshield serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("listening on http://") {
                        break a.to_string();
                    }
                }
                _ => {
                    let out = child.wait_with_output().expect("wait");
                    panic!(
                        "serve {args:?} exited before listening: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// One HTTP/1.1 request (`Connection: close`): (status, body).
    pub fn request(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        self.request_with(method, path, json, "")
    }

    /// [`Server::request`] with `Authorization: Bearer KEY`.
    pub fn request_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> (u16, String) {
        self.request_with(
            method,
            path,
            json,
            &format!("Authorization: Bearer {key}\r\n"),
        )
    }

    /// One request with extra header lines (each ending in CRLF): (status, body).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
        extra: &str,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        let body = json.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}{}Content-Length: {}\r\n\r\n",
            self.addr,
            if json.is_some() { "Content-Type: application/json\r\n" } else { "" },
            body.len()
        );
        s.write_all(head.as_bytes()).expect("write head");
        s.write_all(body.as_bytes()).expect("write body");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {resp:?}"));
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }
}

impl Server {
    /// Kill the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
