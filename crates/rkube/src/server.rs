//! `rkube server`: opens the store, starts its compactor and the API server, and runs until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use rkube_apiserver::{Config, Server};
use rkube_store::{Backend, CompactorConfig, EmbeddedConfig, Store};

#[derive(clap::Args)]
pub struct Args {
    /// Where the server keeps its state: the embedded store, the PKI and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/rkube")]
    data_dir: PathBuf,
    /// The address and port to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    bind: SocketAddr,
    /// Where cluster state lives: `embedded` (in the data directory) or `etcd`.
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// etcd endpoints, comma-separated, for `--store etcd`.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// A token file: lines of `token,user,uid[,"group1,group2"]`, as Kubernetes' --token-auth-file.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// The IPv4 range services' cluster IPs come from; its first address is the `kubernetes`
    /// service's.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: rkube_apiserver::api::services::Cidr,
    /// Runs the API server without the scheduler and the controllers.
    #[arg(long)]
    no_controllers: bool,
    /// Registers this many simulated nodes (a test and scale tool, like kwok): they take pods
    /// and report them Running without running anything. Labelled `rkube.io/simulated=true`.
    #[arg(long, default_value_t = 0)]
    simulated_nodes: usize,
    /// Each simulated node's capacity, over the defaults cpu=32,memory=256Gi,pods=110.
    #[arg(long, value_name = "cpu=N,memory=Q,pods=N")]
    simulated_node_capacity: Option<String>,
    /// How long a node may go without a heartbeat before it is marked Unknown and tainted,
    /// in seconds (upstream's --node-monitor-grace-period).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Runs the control plane only, with no node agent in this process.
    #[arg(long)]
    no_agent: bool,
    /// The IPv4 range pods' IPs come from; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: rkube_controllers::nodeipam::ClusterCidr,
    #[command(flatten)]
    agent: crate::agent::NodeArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StoreKind {
    Embedded,
    Etcd,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let backend = match args.store {
        StoreKind::Embedded => Backend::Embedded(EmbeddedConfig::new(args.data_dir.join("store"))),
        StoreKind::Etcd if args.etcd_endpoints.is_empty() => {
            anyhow::bail!("--store etcd needs --etcd-endpoints, such as http://127.0.0.1:2379")
        }
        StoreKind::Etcd => Backend::Etcd { endpoints: args.etcd_endpoints.clone() },
    };
    let mut simulated = rkube_controllers::simulated::Config::new(args.simulated_nodes);
    if let Some(capacity) = &args.simulated_node_capacity {
        simulated.set_capacity(capacity).map_err(|e| anyhow::anyhow!("--simulated-node-capacity: {e}"))?;
    }
    if args.node_monitor_grace_period == 0 {
        anyhow::bail!("--node-monitor-grace-period must be at least 1 second");
    }
    // Simulated kubelets renew their leases well within the grace period.
    simulated.heartbeat = simulated.heartbeat.min(std::time::Duration::from_secs(args.node_monitor_grace_period) / 3);
    let store = Store::open(backend).await.context("cannot open the cluster store")?;
    let _compactor = store.start_compactor(CompactorConfig::default());
    let config = Config {
        data_dir: args.data_dir.clone(),
        bind: args.bind,
        token_file: args.token_auth_file,
        service_cidr: args.service_cidr,
    };
    let server = Server::start(config, store).await.context("cannot start the API server")?;
    eprintln!(
        "rkube server listening on https://{}; admin kubeconfig: {}",
        server.addr(),
        args.data_dir.join("kubeconfig").display()
    );
    // The control loops and simulated nodes go through the API like any client, but called
    // in-process: no TLS or TCP between the server and its own loops. The node agent below
    // connects over HTTPS under its own identity, as a joined node does.
    let user = rkube_apiserver::User {
        name: "system:kube-controller-manager".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    };
    let client = kube::Client::new(server.in_process(user), "default");
    let mut loops = rkube_controllers::Config { cluster_cidr: args.cluster_cidr, ..Default::default() };
    loops.node_lifecycle.grace_period = std::time::Duration::from_secs(args.node_monitor_grace_period);
    loops.node_lifecycle.monitor_period =
        loops.node_lifecycle.monitor_period.min(loops.node_lifecycle.grace_period / 2);
    let controllers = (!args.no_controllers).then(|| rkube_controllers::Controllers::start(client.clone(), loops));
    let simulated_nodes =
        (simulated.count > 0).then(|| tokio::spawn(rkube_controllers::simulated::run(client.clone(), simulated)));
    // The server's own node: a one-node cluster out of the box, as k3s runs one.
    let agent = match args.no_agent {
        true => None,
        false => {
            let mut config = args.agent.server_config(&args.data_dir)?;
            config.labels.insert("node-role.kubernetes.io/control-plane".into(), "true".into());
            // The node runs under its own identity, as a joined node does.
            let (name, _) = rkube_agent::identity(&config);
            let issued = rkube_apiserver::pki::node_client(&args.data_dir, &name)?;
            let ca = std::fs::read_to_string(args.data_dir.join("pki/ca.crt")).context("reading the cluster CA")?;
            let url = format!("https://{}", server_host(server.addr()));
            let kubeconfig = crate::join::kubeconfig(&url, &ca, &name, &issued.cert, &issued.key);
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig)?;
            let node_client =
                kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
            Some(rkube_agent::Agent::start(node_client, config))
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = server.wait() => anyhow::bail!("the API server stopped"),
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(controllers);
    if let Some(agent) = agent {
        agent.stop().await;
    }
    if let Some(nodes) = simulated_nodes {
        nodes.abort();
    }
    eprintln!("rkube server: shutting down");
    Ok(())
}

/// Where in-process clients reach the API server: the bound address, or loopback when it is
/// bound to every address.
fn server_host(addr: std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        std::net::SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        std::net::SocketAddr::V4(a) => a.to_string(),
    }
}
