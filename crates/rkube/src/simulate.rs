//! `rkube simulate`: simulated nodes (a test and scale tool, like kwok) that join a running
//! server through its API, as `rkube server --simulated-nodes` runs them in-process. They
//! stop heartbeating when the command stops, so the server sees them go NotReady.

use std::path::PathBuf;

/// `rkube simulate`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// A kubeconfig for the server (its admin kubeconfig, `DATA/kubeconfig`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many nodes to register.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Node names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "rkube-sim-")]
    prefix: String,
    /// Each node's capacity, over the defaults cpu=32,memory=256Gi,pods=110.
    #[arg(long, value_name = "cpu=N,memory=Q,pods=N")]
    capacity: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
    let mut config = rkube_controllers::simulated::Config::new(args.nodes);
    config.prefix = args.prefix;
    if let Some(capacity) = &args.capacity {
        config.set_capacity(capacity).map_err(|e| anyhow::anyhow!("--capacity: {e}"))?;
    }
    // Fail early and clearly when the server cannot be reached with these credentials.
    client.apiserver_version().await.map_err(|e| anyhow::anyhow!("cannot reach the server: {e}"))?;
    eprintln!("rkube simulate: {} simulated nodes named {}N", config.count, config.prefix);
    let nodes = tokio::spawn(rkube_controllers::simulated::run(client, config));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    nodes.abort();
    Ok(())
}
