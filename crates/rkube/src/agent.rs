//! `rkube images import` and `rkube killall`, and the node flags `rkube server` shares with
//! the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// The node agent's flags.
#[derive(clap::Args, Clone)]
pub struct NodeArgs {
    /// The node's name; defaults to the host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP; defaults to the address of the default route.
    #[arg(long)]
    node_ip: Option<String>,
    /// An existing CRI socket (containerd or CRI-O) to run pods with, instead of the agent's
    /// own containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<PathBuf>,
    /// The node API's port (logs), the kubelet's 10250 by default; 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    node_api_port: u16,
    /// The cluster DNS server(s) pods with `dnsPolicy: ClusterFirst` use, as the kubelet's
    /// flag; without one they use the node's resolver.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain, for pods' search paths.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

impl NodeArgs {
    /// The agent's config, without its node API.
    pub fn config(&self, data_dir: &Path) -> rkube_agent::Config {
        rkube_agent::Config {
            data_dir: data_dir.to_owned(),
            node_name: self.node_name.clone(),
            node_ip: self.node_ip.clone(),
            runtime_endpoint: self.container_runtime_endpoint.clone(),
            labels: Default::default(),
            node_api: None,
            cluster_dns: rkube_agent::spec::ClusterDns {
                servers: self.cluster_dns.clone(),
                domain: self.cluster_domain.clone(),
            },
        }
    }

    pub fn node_api_port(&self) -> u16 {
        self.node_api_port
    }

    /// The agent's config on a server, whose PKI issues the node's serving certificate.
    pub fn server_config(&self, data_dir: &Path) -> anyhow::Result<rkube_agent::Config> {
        let mut config = self.config(data_dir);
        let (name, ip) = rkube_agent::identity(&config);
        let ips: Vec<std::net::IpAddr> = ip.parse().into_iter().collect();
        let serving = rkube_apiserver::pki::node_serving(data_dir, &name, &ips)?;
        let ca = std::fs::read_to_string(data_dir.join("pki/ca.crt")).context("reading the cluster CA")?;
        config.node_api = Some(rkube_agent::NodeApi {
            port: self.node_api_port,
            tls: rkube_agent::nodeapi::Tls { cert_pem: serving.cert, key_pem: serving.key, client_ca_pem: ca },
        });
        Ok(config)
    }
}

#[derive(clap::Subcommand)]
pub enum Images {
    /// Loads an OCI or docker-archive tarball into the node's containerd (`docker save`
    /// output works). The agent must be running.
    Import {
        file: PathBuf,
        #[arg(long, default_value = "/var/lib/rkube")]
        data_dir: PathBuf,
    },
    /// Writes a docker-archive of a busybox image built from this machine's busybox-static:
    /// a test image for clusters with no registry.
    BuildBusybox {
        /// Where to write the tarball.
        file: PathBuf,
        #[arg(long, default_value = "docker.io/library/busybox:1.35")]
        tag: String,
    },
}

pub async fn images(which: Images) -> anyhow::Result<()> {
    match which {
        Images::Import { file, data_dir } => {
            let socket = rkube_agent::containerd::Paths::new(&data_dir).socket();
            if !socket.exists() {
                anyhow::bail!(
                    "no containerd socket at {}: is `rkube server` (or `rkube agent`) running with --data-dir {}?",
                    socket.display(),
                    data_dir.display()
                );
            }
            if !file.is_file() {
                anyhow::bail!("{}: no such file", file.display());
            }
            rkube_agent::image::import(&socket, &file).await?;
            eprintln!("imported {}", file.display());
        }
        Images::BuildBusybox { file, tag } => {
            let spec = rkube_agent::image::Spec { reference: &tag, entrypoint: &[], cmd: &["sh"], env: &[] };
            rkube_agent::image::write_busybox_archive(&spec, &file)?;
            eprintln!("wrote {tag} to {}", file.display());
        }
    }
    Ok(())
}

/// Every process: (pid, parent pid, command line).
fn processes() -> Vec<(i32, i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The parent pid follows the command name, which is in parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

/// SIGKILLs a process and everything under it, children first.
fn kill_tree(root: i32) {
    let all = processes();
    let mut order = vec![root];
    let mut i = 0;
    while i < order.len() {
        let parent = order[i];
        order.extend(all.iter().filter(|(_, ppid, _)| *ppid == parent).map(|(pid, _, _)| *pid));
        i += 1;
    }
    for pid in order.into_iter().rev() {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

/// Stops every pod the node runs and the agent's containerd, as k3s-killall.sh does: for
/// uninstalling, and for tests that must leave nothing behind.
pub async fn killall(data_dir: &Path) -> anyhow::Result<()> {
    use k8s_cri::v1::{ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest};
    let paths = rkube_agent::containerd::Paths::new(data_dir);
    let socket = paths.socket();
    let config = paths.containerd().join("config.toml");
    // With the agent gone its containerd is too: one is started for long enough to stop the
    // sandboxes properly (CNI teardown included).
    let mut started = None;
    if tokio::net::UnixStream::connect(&socket).await.is_err()
        && config.is_file()
        && let Some(binary) = rkube_agent::containerd::find_program("containerd")
    {
        let child = tokio::process::Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting containerd")?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(paths.containerd().join("containerd.pid"), pid.to_string());
        }
        started = Some(child);
        for _ in 0..250 {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        let cri = rkube_agent::cri::connect(&socket);
        let mut rt = cri.runtime.clone();
        // A containerd that has just started answers "not initialized" for a moment.
        let mut sandboxes = Vec::new();
        for _ in 0..50 {
            match tokio::time::timeout(Duration::from_secs(10), rt.list_pod_sandbox(ListPodSandboxRequest::default()))
                .await
            {
                Ok(Ok(list)) => {
                    sandboxes = list.into_inner().items;
                    break;
                }
                Ok(Err(e)) if e.message().contains("not initialized") => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(Err(e)) => {
                    eprintln!("rkube killall: listing sandboxes: {}", e.message());
                    break;
                }
                Err(_) => {
                    eprintln!("rkube killall: containerd did not answer");
                    break;
                }
            }
        }
        for s in sandboxes {
            let _ = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
            let _ = rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: s.id }).await;
        }
    }
    drop(started);
    // Shims whose containerd could not be reached are stopped with their containers.
    let address = socket.to_string_lossy().into_owned();
    for pid in processes().into_iter().filter(|(_, _, cmd)| cmd.contains("containerd-shim") && cmd.contains(&address)) {
        kill_tree(pid.0);
    }
    // containerd itself, by the pid the agent recorded.
    let pid_file = paths.containerd().join("containerd.pid");
    if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&*paths.containerd().to_string_lossy()) {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The node's bridge, which CNI leaves behind.
    if let Some(bridge) = rkube_agent::cni::installed_bridge(&paths.cni_conf_dir()) {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
    // Routes to other nodes and the NAT exemptions (one agent per network namespace owns them).
    rkube_agent::routes::remove_all().await;
    // Mounts left under the data directory (sandbox shm, rootfs) are unmounted.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let root = paths.root.to_string_lossy().into_owned();
    let mut targets: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&root)).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let _ = std::process::Command::new("umount").arg(target).status();
    }
    Ok(())
}
