//! `rkube agent` (a node joining a server with a token) and `rkube token`.
//!
//! The agent trusts the server's CA only once its SHA-256 matches the token, then sends two
//! certificate requests (its client identity and its node API's serving certificate) with
//! the token's secret. Keys never leave the node; the credentials are kept under
//! `DATA/agent/pki` and reused until the node's name, addresses or server change.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;

/// `rkube agent`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The server to join, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    server: String,
    /// The server's join token (`rkube token` on the server), or RKUBE_TOKEN.
    #[arg(long, env = "RKUBE_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, default_value = "/var/lib/rkube")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: crate::agent::NodeArgs,
}

/// `rkube token`: prints the server's join token.
pub fn print_token(data_dir: &Path) -> anyhow::Result<()> {
    let path = rkube_apiserver::join::token_path(data_dir);
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!("no join token at {}: start `rkube server --data-dir {}` first", path.display(), data_dir.display())
    })?;
    println!("{}", token.trim());
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = args.node.config(&args.data_dir);
    let (name, ip) = rkube_agent::identity(&config);
    let creds = credentials(&args, &name, &ip).await?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&creds.kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
    config.node_api = Some(rkube_agent::NodeApi {
        port: args.node.node_api_port(),
        tls: rkube_agent::nodeapi::Tls {
            cert_pem: creds.serving_cert,
            key_pem: creds.serving_key,
            client_ca_pem: creds.ca,
        },
    });
    eprintln!("rkube agent: node {name} ({ip}) joining {}", args.server);
    let agent = rkube_agent::Agent::start(client, config);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    agent.stop().await;
    Ok(())
}

struct Credentials {
    ca: String,
    serving_cert: String,
    serving_key: String,
    kubeconfig: String,
}

fn pem_b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// The node's credentials: kept ones if they were issued for this node, server and token,
/// otherwise new ones from the server.
async fn credentials(args: &Args, name: &str, ip: &str) -> anyhow::Result<Credentials> {
    let (hash, secret) = rkube_apiserver::join::parse_token(&args.token).map_err(anyhow::Error::msg)?;
    let dir = args.data_dir.join("agent/pki");
    let stamp = format!("{name} {ip} {} {hash}", args.server);
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let kept = (
        read("join.stamp").is_ok_and(|s| s == stamp),
        read("ca.crt"),
        read("serving.crt"),
        read("serving.key"),
        std::fs::read_to_string(args.data_dir.join("agent/kubeconfig")),
    );
    if let (true, Ok(ca), Ok(serving_cert), Ok(serving_key), Ok(kubeconfig)) = kept {
        return Ok(Credentials { ca, serving_cert, serving_key, kubeconfig });
    }
    // The CA, over a connection not yet verified: trusted only if it is the one the token pins.
    let ca = request(&client_config(&args.server, None, None), http::Method::GET, rkube_apiserver::join::CA_PATH, None)
        .await
        .with_context(|| format!("fetching the cluster CA from {}", args.server))?;
    if rkube_apiserver::join::ca_hash(&ca) != hash {
        bail!(
            "the server at {} does not have the CA this token names: wrong server, or a token from another cluster",
            args.server
        );
    }
    let client_key = rcgen::KeyPair::generate()?;
    let serving_key = rcgen::KeyPair::generate()?;
    let csr = |key: &rcgen::KeyPair| -> anyhow::Result<String> {
        Ok(rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(key)?.pem()?)
    };
    let body = serde_json::json!({
        "nodeName": name,
        "nodeIPs": [ip],
        "clientCsr": csr(&client_key)?,
        "servingCsr": csr(&serving_key)?,
    });
    let answer = request(
        &client_config(&args.server, Some(&ca), Some(secret)),
        http::Method::POST,
        rkube_apiserver::join::JOIN_PATH,
        Some(body),
    )
    .await
    .with_context(|| format!("joining {}", args.server))?;
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    let field = |f: &str| answer[f].as_str().map(str::to_owned).with_context(|| format!("the join answer has no {f}"));
    let (client_cert, serving_cert) = (field("clientCert")?, field("servingCert")?);
    let kubeconfig = kubeconfig(&args.server, &ca, name, &client_cert, &client_key.serialize_pem());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |path: PathBuf, content: &str| -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        std::io::Write::write_all(&mut f, content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    };
    write(dir.join("ca.crt"), &ca)?;
    write(dir.join("serving.crt"), &serving_cert)?;
    write(dir.join("serving.key"), &serving_key.serialize_pem())?;
    write(args.data_dir.join("agent/kubeconfig"), &kubeconfig)?;
    // Last: its presence says the files above belong together.
    write(dir.join("join.stamp"), &stamp)?;
    Ok(Credentials { ca, serving_cert, serving_key: serving_key.serialize_pem(), kubeconfig })
}

/// A node's kubeconfig: the server, its CA, and the node's client certificate.
pub fn kubeconfig(server: &str, ca: &str, name: &str, cert: &str, key: &str) -> String {
    rkube_apiserver::pki::kubeconfig(server, ca, &format!("system:node:{name}"), cert, key)
}

/// A kubeconfig for the join requests: no CA yet (anything is accepted, then checked against
/// the token), or the CA and the token's secret.
fn client_config(server: &str, ca: Option<&str>, token: Option<&str>) -> String {
    let cluster = match ca {
        Some(ca) => format!("certificate-authority-data: {}", pem_b64(ca)),
        None => "insecure-skip-tls-verify: true".to_owned(),
    };
    let user = token.map(|t| format!("token: {t}")).unwrap_or_else(|| "{}".to_owned());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: s
  cluster:
    server: {server}
    {cluster}
users:
- name: u
  user: {user_block}
contexts:
- name: c
  context: {{cluster: s, user: u}}
current-context: c
",
        user_block = if token.is_some() { format!("\n    {user}") } else { user },
    )
}

async fn request(
    kubeconfig: &str,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<String> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request =
        http::Request::builder().method(method).uri(path).header("content-type", "application/json").body(body)?;
    Ok(client.request_text(request).await?)
}
