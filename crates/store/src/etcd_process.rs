//! Starts and stops real etcd processes on loopback, a single member or a cluster, for the
//! behaviour suite and for `rkube bench store`. Each member has its own data directory and
//! ports; dropping it kills the process.

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
    /// Starts a single-member etcd with its data in `data_dir` (created if missing) and waits
    /// until it answers.
    pub async fn start(data_dir: &Path) -> Result<EtcdProcess> {
        let member = Member::new("rkube-test")?;
        let mut process = member.spawn(data_dir, &member.peer_entry())?;
        process.wait_ready().await?;
        Ok(process)
    }

    /// Starts a cluster of `size` members, each with its own directory under `base_dir`, and
    /// waits until every member answers.
    pub async fn start_cluster(base_dir: &Path, size: usize) -> Result<Vec<EtcdProcess>> {
        let members = (0..size).map(|i| Member::new(&format!("member-{i}"))).collect::<Result<Vec<_>>>()?;
        let initial_cluster = members.iter().map(Member::peer_entry).collect::<Vec<_>>().join(",");
        let mut processes =
            members.iter().map(|m| m.spawn(&base_dir.join(&m.name), &initial_cluster)).collect::<Result<Vec<_>>>()?;
        for process in &mut processes {
            process.wait_ready().await?;
        }
        Ok(processes)
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

/// One member's name and loopback addresses, chosen before any member starts.
struct Member {
    name: String,
    client: String,
    peer: String,
}

impl Member {
    fn new(name: &str) -> Result<Member> {
        Ok(Member {
            name: name.to_owned(),
            client: format!("http://127.0.0.1:{}", free_port()?),
            peer: format!("http://127.0.0.1:{}", free_port()?),
        })
    }

    fn peer_entry(&self) -> String {
        format!("{}={}", self.name, self.peer)
    }

    fn spawn(&self, data_dir: &Path, initial_cluster: &str) -> Result<EtcdProcess> {
        let binary = find_binary()?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Etcd(format!("cannot create {}: {e}", data_dir.display())))?;
        let log = std::fs::File::create(data_dir.join("etcd.log"))
            .map_err(|e| StoreError::Etcd(format!("cannot create the etcd log: {e}")))?;
        let child = Command::new(&binary)
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", data_dir.join("member-data").display()))
            .arg(format!("--listen-client-urls={}", self.client))
            .arg(format!("--advertise-client-urls={}", self.client))
            .arg(format!("--listen-peer-urls={}", self.peer))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer))
            .arg(format!("--initial-cluster={initial_cluster}"))
            // Room for a value at our limit plus the request around it.
            .arg(format!("--max-request-bytes={}", MAX_VALUE_BYTES + (64 << 10)))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| StoreError::Etcd(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| StoreError::Etcd(format!("cannot start {}: {e}", binary.display())))?;
        Ok(EtcdProcess { child, endpoint: self.client.clone(), data_dir: data_dir.to_owned() })
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
