//! Starts and stops a real single-member etcd on loopback, for the behaviour suite and for
//! `rkube bench store`. Each instance has its own data directory and ports; dropping it kills
//! the process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{MAX_VALUE_BYTES, Result, StoreError};

pub struct EtcdProcess {
    child: Child,
    endpoint: String,
    data_dir: PathBuf,
}

/// How long etcd may take to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl EtcdProcess {
    /// Starts etcd with its data in `data_dir` (created if missing) and waits until it answers.
    pub async fn start(data_dir: &Path) -> Result<EtcdProcess> {
        let binary = find_binary()?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Etcd(format!("cannot create {}: {e}", data_dir.display())))?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data_dir.join("etcd.log"))
            .map_err(|e| StoreError::Etcd(format!("cannot create the etcd log: {e}")))?;
        let child = Command::new(&binary)
            .arg("--name=rkube-test")
            .arg(format!("--data-dir={}", data_dir.join("member-data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=rkube-test={peer}"))
            // Room for a value at our limit plus the request around it.
            .arg(format!("--max-request-bytes={}", MAX_VALUE_BYTES + (64 << 10)))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| StoreError::Etcd(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| StoreError::Etcd(format!("cannot start {}: {e}", binary.display())))?;
        let mut process = EtcdProcess { child, endpoint, data_dir: data_dir.to_owned() };
        process.wait_ready().await?;
        Ok(process)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StoreError::Etcd(format!(
                    "etcd exited with {status} during start-up; see {}",
                    self.data_dir.join("etcd.log").display()
                )));
            }
            let attempt = async {
                let mut client = etcd_client::Client::connect([self.endpoint.as_str()], None).await?;
                client.get("/", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::Etcd(format!("etcd did not answer on {} within 20s", self.endpoint)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Result<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("etcd")).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
        .ok_or_else(|| StoreError::Etcd("etcd is not installed: apt-get install etcd-server".into()))
}

fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| StoreError::Etcd(format!("cannot find a free port: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| StoreError::Etcd(e.to_string()))
}
