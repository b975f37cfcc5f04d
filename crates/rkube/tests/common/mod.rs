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
    /// Set for a server that runs its node agent: what it runs is stopped on drop.
    node: Option<CidrLease>,
}

/// A cluster CIDR of its own for each test server that runs pods, so that tests running at
/// once never share a bridge or a route: `10.N.0.0/16` for N in 100..200, held by a lock
/// file that names the holding process.
pub struct CidrLease {
    pub cidr: String,
    lock: PathBuf,
}

impl CidrLease {
    pub fn take() -> CidrLease {
        let me = std::process::id().to_string();
        for n in 100..200 {
            let lock = std::env::temp_dir().join(format!("rkube-test-cidr-{n}"));
            let free = match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(_) => true,
                // A lock whose process has gone is taken over.
                Err(_) => std::fs::read_to_string(&lock)
                    .map(|pid| !Path::new(&format!("/proc/{}", pid.trim())).exists())
                    .unwrap_or(false),
            };
            if free {
                std::fs::write(&lock, &me).unwrap();
                return CidrLease { cidr: format!("10.{n}.0.0/16"), lock };
            }
        }
        panic!("no free test cluster CIDR in 10.100.0.0 to 10.199.0.0");
    }
}

impl Drop for CidrLease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

impl ServerProcess {
    pub fn start(data_dir: &Path) -> ServerProcess {
        ServerProcess::start_with(data_dir, &[])
    }

    /// A control plane with extra `rkube server` flags, and no node agent.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> ServerProcess {
        let mut flags = flags.to_vec();
        if !flags.contains(&"--no-agent") {
            flags.push("--no-agent");
        }
        ServerProcess::spawn(data_dir, &flags, None)
    }

    /// A one-node cluster: the server runs its node agent and real containers. Dropping it
    /// stops the pods' containers and the agent's containerd (`rkube killall`).
    pub fn start_node(data_dir: &Path, flags: &[&str]) -> ServerProcess {
        let lease = CidrLease::take();
        let mut flags = flags.to_vec();
        flags.extend(["--cluster-cidr", &lease.cidr, "--node-api-port", "0"]);
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        ServerProcess::spawn(data_dir, &flags, Some(lease))
    }

    /// Kills the server (SIGKILL) but leaves the node's containers running, as a crash
    /// would; a server started again on the same data dir adopts them.
    pub fn crash(mut self) -> Option<CidrLease> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.node.take()
    }

    /// A server with its node agent on the data dir `crash` left, keeping its CIDR.
    pub fn restart_node(data_dir: &Path, lease: CidrLease) -> ServerProcess {
        let cidr = lease.cidr.clone();
        ServerProcess::spawn(data_dir, &["--cluster-cidr", &cidr, "--node-api-port", "0"], Some(lease))
    }

    /// A server listening on `bind` (an address other hosts, such as network namespaces, can
    /// reach), with exactly `flags`.
    pub fn start_at(data_dir: &Path, bind: &str, flags: &[&str]) -> ServerProcess {
        ServerProcess::spawn_at(data_dir, bind, flags, None)
    }

    /// A control plane without a node agent, with extra environment variables (fault
    /// injection such as `RKUBE_WATCH_CACHE_LAG_MS`).
    pub fn start_with_env(data_dir: &Path, flags: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        let mut flags = flags.to_vec();
        flags.push("--no-agent");
        ServerProcess::spawn_env(data_dir, "127.0.0.1:0", &flags, None, envs)
    }

    fn spawn(data_dir: &Path, flags: &[&str], node: Option<CidrLease>) -> ServerProcess {
        ServerProcess::spawn_at(data_dir, "127.0.0.1:0", flags, node)
    }

    fn spawn_at(data_dir: &Path, bind: &str, flags: &[&str], node: Option<CidrLease>) -> ServerProcess {
        ServerProcess::spawn_env(data_dir, bind, flags, node, &[])
    }

    fn spawn_env(
        data_dir: &Path,
        bind: &str,
        flags: &[&str],
        node: Option<CidrLease>,
        envs: &[(&str, &str)],
    ) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["server", "--bind", bind, "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .envs(envs.iter().copied())
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
        ServerProcess { child, url, data_dir: data_dir.to_owned(), node }
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
        if self.node.is_some() {
            let _ = Command::new(env!("CARGO_BIN_EXE_rkube"))
                .args(["killall", "--data-dir"])
                .arg(&self.data_dir)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl ServerProcess {
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }
}
