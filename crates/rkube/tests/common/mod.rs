//! A real `rkube server` process for integration tests: its own data dir, a free loopback
//! port, and kubectl runs with its own cache dir.
#![allow(dead_code)] // each test binary uses its own part of this

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct ServerProcess {
    child: Child,
    pub url: String,
    data_dir: PathBuf,
}

impl ServerProcess {
    pub fn start(data_dir: &Path) -> ServerProcess {
        ServerProcess::start_with(data_dir, &[])
    }

    /// A server with extra `rkube server` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["server", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rkube server");
        // The server says where it listens once it accepts connections.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("server output").expect("read server output");
            if let Some(rest) = line.strip_prefix("rkube server listening on ") {
                break rest.split(';').next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, url, data_dir: data_dir.to_owned() }
    }

    pub fn kubectl(&self, binary: &str, args: &[&str]) -> Output {
        Command::new(binary)
            .arg(format!("--kubeconfig={}", self.data_dir.join("kubeconfig").display()))
            .arg(format!(
                "--cache-dir={}",
                self.data_dir.join(format!("cache-{}", binary.rsplit('.').next().unwrap())).display()
            ))
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns its stdout, failing the test with stderr if it failed.
    pub fn ok(&self, binary: &str, args: &[&str]) -> String {
        let out = self.kubectl(binary, args);
        assert!(out.status.success(), "{binary} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl expecting failure; returns its stderr.
    pub fn fails(&self, binary: &str, args: &[&str]) -> String {
        let out = self.kubectl(binary, args);
        assert!(!out.status.success(), "{binary} {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; true if it did.
    pub fn terminate(&mut self, timeout: std::time::Duration) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }
}
