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
    /// Runs the control plane only, with no node agent in this process. Accepted today for
    /// scripts that will use it: the node agent (issue 5) is not built yet, so the server
    /// never runs one.
    #[arg(long)]
    no_agent: bool,
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
    if !args.no_agent {
        tracing::info!("no node agent runs in this server yet: this is a control plane without nodes");
    }
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
    // The control loops and simulated nodes, through the API like any client (for now as the
    // admin).
    let kubeconfig = kube::config::Kubeconfig::read_from(args.data_dir.join("kubeconfig"))?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
    let mut loops = rkube_controllers::Config::default();
    loops.node_lifecycle.grace_period = std::time::Duration::from_secs(args.node_monitor_grace_period);
    loops.node_lifecycle.monitor_period =
        loops.node_lifecycle.monitor_period.min(loops.node_lifecycle.grace_period / 2);
    let controllers = (!args.no_controllers).then(|| rkube_controllers::Controllers::start(client.clone(), loops));
    let simulated_nodes =
        (simulated.count > 0).then(|| tokio::spawn(rkube_controllers::simulated::run(client, simulated)));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = server.wait() => anyhow::bail!("the API server stopped"),
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(controllers);
    if let Some(nodes) = simulated_nodes {
        nodes.abort();
    }
    eprintln!("rkube server: shutting down");
    Ok(())
}
