//! The agent's own containerd, as k3s runs one: its config, root, state and socket live under
//! the data directory, so it never touches a containerd the machine already runs. It is
//! restarted when it dies; the containers it runs survive that (their shims outlive it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::Error;

/// Where everything the agent keeps lives, under `DATA/agent`.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths { root: data_dir.join("agent") }
    }
    pub fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }
    pub fn socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni")
    }
    /// Image tarballs imported at start (`DATA/agent/images/*.tar`).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// Each pod's container logs, as the kubelet keeps them in `/var/log/pods`.
    pub fn pod_logs(&self) -> PathBuf {
        self.root.join("pods")
    }
    fn pid_file(&self) -> PathBuf {
        self.containerd().join("containerd.pid")
    }
}

/// The image every sandbox runs, built from busybox-static and imported by the agent.
pub const PAUSE_IMAGE: &str = "rkube.local/pause:1";

/// The Debian packages the agent needs, named in every error about them.
pub const PACKAGES: &str = "containerd runc containernetworking-plugins busybox-static";

/// Where Debian's containernetworking-plugins puts the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Finds `program` on PATH or in the sbin directories a root shell would search.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// What is missing from the machine for the agent to run pods, in words for the node's Ready
/// condition; None when nothing is.
pub fn missing_prerequisites() -> Option<String> {
    let mut missing: Vec<&str> =
        ["containerd", "runc", "ctr"].into_iter().filter(|p| find_program(p).is_none()).collect();
    if !Path::new(CNI_BIN_DIR).join("bridge").is_file() {
        missing.push("the CNI plugins");
    }
    (!missing.is_empty()).then(|| {
        format!("{} not installed: install Debian's {PACKAGES} (apt-get install {PACKAGES})", missing.join(", "))
    })
}

fn config(paths: &Paths) -> String {
    let dir = paths.containerd();
    let d = dir.display();
    format!(
        r#"# Written by rkube's agent at every start; edits are lost.
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = {restrict_oom}

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}"
"#,
        socket = paths.socket().display(),
        cni = paths.cni_conf_dir().display(),
        restrict_oom = !has_sys_resource(),
    )
}

/// Whether this process may lower OOM scores (CAP_SYS_RESOURCE). Without it, as in some
/// VMs and containers, runc fails to give sandboxes their -998 unless containerd clamps
/// scores to its own.
fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The runtime's state, for the node's Ready condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Starting,
    Up,
    Down(String),
}

/// Runs containerd until dropped, restarting it when it exits.
pub async fn supervise(paths: Paths, health: watch::Sender<Health>) {
    let mut delay = Duration::from_secs(1);
    loop {
        match start(&paths).await {
            Ok(mut child) => {
                let began = std::time::Instant::now();
                if wait_for_socket(&paths.socket(), &mut child).await {
                    health.send_replace(Health::Up);
                }
                let mut guard = StopOnDrop(Some(child));
                let status = guard.0.as_mut().expect("child").wait().await;
                guard.0 = None;
                let message = format!(
                    "containerd exited ({}); see {}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    log_path(&paths).display()
                );
                tracing::warn!("{message}");
                health.send_replace(Health::Down(message));
                if began.elapsed() > Duration::from_secs(60) {
                    delay = Duration::from_secs(1);
                }
            }
            Err(e) => {
                tracing::warn!("{e}");
                health.send_replace(Health::Down(e.to_string()));
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Stops containerd with SIGTERM when the supervisor is dropped (the agent is stopping).
struct StopOnDrop(Option<Child>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut()
            && let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

fn log_path(paths: &Paths) -> PathBuf {
    paths.containerd().join("containerd.log")
}

async fn start(paths: &Paths) -> Result<Child, Error> {
    let binary = find_program("containerd")
        .ok_or_else(|| Error::Runtime(format!("containerd is not installed: apt-get install {PACKAGES}")))?;
    let dir = paths.containerd();
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
    std::fs::create_dir_all(paths.cni_conf_dir()).map_err(|e| Error::Io(paths.cni_conf_dir(), e))?;
    stop_stale(paths).await;
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config(paths)).map_err(|e| Error::Io(config_path.clone(), e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(paths))
        .map_err(|e| Error::Io(log_path(paths), e))?;
    let err = log.try_clone().map_err(|e| Error::Io(log_path(paths), e))?;
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: a terminal's Ctrl-C reaches the agent, which stops it.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| Error::Runtime(format!("cannot start containerd: {e}")))?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(paths.pid_file(), pid.to_string());
    }
    Ok(child)
}

/// A containerd left behind by an agent that was killed holds the data directory's locks:
/// it is stopped before a new one starts.
async fn stop_stale(paths: &Paths) {
    let Some(pid) = std::fs::read_to_string(paths.pid_file()).ok().and_then(|p| p.trim().parse::<i32>().ok()) else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = paths.containerd().join("config.toml");
    let ours = String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy());
    let Some(pid) = rustix::process::Pid::from_raw(pid).filter(|_| ours) else {
        return;
    };
    tracing::info!("stopping containerd {pid:?} left by an earlier agent");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

async fn wait_for_socket(socket: &Path, child: &mut Child) -> bool {
    for _ in 0..300 {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_under_the_data_dir() {
        let paths = Paths::new(Path::new("/data"));
        let text = config(&paths);
        assert!(text.contains(r#"address = "/data/agent/containerd/containerd.sock""#));
        assert!(text.contains(r#"root = "/data/agent/containerd/root""#));
        assert!(text.contains(r#"conf_dir = "/data/agent/cni""#));
        assert!(text.contains(PAUSE_IMAGE));
        assert!(!text.contains("/var/lib/containerd"));
    }
}
