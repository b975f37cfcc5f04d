//! `rkube`: one binary for the whole cluster: `server` runs the control plane and its own
//! node, `images` loads images into the node, `killall` stops what a node runs, and `bench`
//! runs the side-by-side benchmarks.

mod agent;
mod bench;
mod join;
mod server;
mod simulate;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rkube", version, about = "A Kubernetes-compatible container orchestrator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane: the API server in front of the cluster store.
    Server(server::Args),
    /// Runs a node agent that joins a server with its join token.
    Agent(join::Args),
    /// Simulated nodes (a test and scale tool, like kwok) joining a running server.
    Simulate(simulate::Args),
    /// Prints the server's join token, for `rkube agent --token`.
    Token {
        #[arg(long, default_value = "/var/lib/rkube")]
        data_dir: std::path::PathBuf,
    },
    /// Images on this node, for clusters without a registry.
    Images {
        #[command(subcommand)]
        which: agent::Images,
    },
    /// Stops every pod this node runs, and its containerd (like k3s-killall.sh).
    Killall {
        #[arg(long, default_value = "/var/lib/rkube")]
        data_dir: std::path::PathBuf,
    },
    /// Benchmarks that compare rkube side by side with what it replaces.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Bench { which } => bench::run(which).await,
            Command::Agent(args) => join::run(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Token { data_dir } => join::print_token(&data_dir),
            Command::Images { which } => agent::images(which).await,
            Command::Killall { data_dir } => agent::killall(&data_dir).await,
        }
    });
    // A task that does not stop promptly must not keep the process alive after SIGTERM.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
