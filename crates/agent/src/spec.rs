//! A pod spec turned into CRI requests: the sandbox config (namespaces, hostname, port
//! mappings, log directory) and each container's config (command, env, resources as cgroup
//! settings, security context), as upstream's kuberuntime builds them. Pure, so tested on
//! fixtures.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PortMapping,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service};

use crate::cri::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};

/// CRI namespace modes.
const POD: i32 = 0;
const CONTAINER: i32 = 1;
const NODE: i32 = 2;

fn spec(pod: &Pod) -> PodSpec {
    pod.spec.clone().unwrap_or_default()
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (POD_NAME.to_owned(), m.name.clone().unwrap_or_default()),
        (POD_NAMESPACE.to_owned(), m.namespace.clone().unwrap_or_default()),
        (POD_UID.to_owned(), m.uid.clone().unwrap_or_default()),
    ])
}

/// `namespace_name_uid`, the kubelet's name for a pod's log directory.
pub fn log_dir_name(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

fn namespaces(spec: &PodSpec) -> NamespaceOption {
    let on = |b: Option<bool>| b.unwrap_or(false);
    NamespaceOption {
        network: if on(spec.host_network) { NODE } else { POD },
        pid: if on(spec.host_pid) {
            NODE
        } else if on(spec.share_process_namespace) {
            POD
        } else {
            CONTAINER
        },
        ipc: if on(spec.host_ipc) { NODE } else { POD },
        ..Default::default()
    }
}

pub fn sandbox_config(pod: &Pod, attempt: u32, logs: &Path) -> PodSandboxConfig {
    let s = spec(pod);
    let m = &pod.metadata;
    let name = m.name.clone().unwrap_or_default();
    let hostname = if s.host_network.unwrap_or(false) {
        String::new()
    } else {
        s.hostname
            .clone()
            .unwrap_or_else(|| name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_owned())
    };
    let port_mappings = s
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => 1,
                Some("SCTP") => 2,
                _ => 0,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let mut labels: HashMap<String, String> = m.labels.clone().unwrap_or_default().into_iter().collect();
    labels.extend(pod_labels(pod));
    let privileged = s
        .containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .any(|c| c.security_context.as_ref().and_then(|sc| sc.privileged).unwrap_or(false));
    let psc = s.security_context.clone().unwrap_or_default();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name,
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: logs.join(log_dir_name(pod)).to_string_lossy().into_owned(),
        dns_config: None,
        port_mappings,
        labels,
        annotations: m.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(&s)),
                privileged,
                run_as_user: psc.run_as_user.map(|value| Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: psc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The cluster's DNS, as the kubelet's `--cluster-dns` and `--cluster-domain`.
#[derive(Clone, Debug, Default)]
pub struct ClusterDns {
    pub servers: Vec<String>,
    pub domain: String,
}

/// The node's resolver configuration, for `dnsPolicy: Default`: /etc/resolv.conf, or
/// systemd-resolved's upstream file when /etc/resolv.conf only names its local stub.
pub fn host_resolv_conf() -> String {
    let etc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let stub_only = parse_resolv_conf(&etc).servers.iter().all(|s| s.starts_with("127."));
    match std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
        Ok(upstream) if stub_only => upstream,
        _ => etc,
    }
}

fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut config = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split(['#', ';']).next().unwrap_or_default().split_whitespace();
        match words.next() {
            Some("nameserver") => config.servers.extend(words.next().map(str::to_owned)),
            Some("search" | "domain") => config.searches = words.map(str::to_owned).collect(),
            Some("options") => config.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    config
}

/// The pod's resolver, as upstream's kubelet makes it from `dnsPolicy` and `dnsConfig`. The
/// flag is true when the pod asked for cluster DNS that this node does not have, and fell back
/// to the node's resolver (upstream's MissingClusterDNS).
pub fn dns_config(pod: &Pod, cluster: &ClusterDns, host_resolv: &str) -> (DnsConfig, bool) {
    let s = spec(pod);
    let host_network = s.host_network.unwrap_or(false);
    let policy = s.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let wants_cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut missing = false;
    let mut config = match policy {
        "None" => DnsConfig::default(),
        _ if wants_cluster && !cluster.servers.is_empty() => {
            let host = parse_resolv_conf(host_resolv);
            let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let d = &cluster.domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(host.searches);
            DnsConfig { servers: cluster.servers.clone(), searches, options: vec!["ndots:5".into()] }
        }
        _ => {
            missing = wants_cluster;
            parse_resolv_conf(host_resolv)
        }
    };
    if let Some(extra) = &s.dns_config {
        for server in extra.nameservers.iter().flatten() {
            if !config.servers.contains(server) {
                config.servers.push(server.clone());
            }
        }
        for search in extra.searches.iter().flatten() {
            if !config.searches.contains(search) {
                config.searches.push(search.clone());
            }
        }
        for option in extra.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            config.options.retain(|o| o.split(':').next() != Some(name.as_str()));
            config.options.push(match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    // Upstream's limits: three name servers, 32 search domains.
    config.servers.truncate(3);
    config.searches.truncate(32);
    (config, missing)
}

/// CPU shares, quota and memory limit from the container's requests and limits.
pub fn resources(c: &Container) -> LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let get =
        |map: &Option<std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         name: &str| map.as_ref().and_then(|m| m.get(name)).map(|q| q.0.clone());
    let cpu_request = get(&res.requests, "cpu").or_else(|| get(&res.limits, "cpu"));
    let cpu_limit = get(&res.limits, "cpu");
    let memory_limit = get(&res.limits, "memory");
    let request_milli = cpu_request.as_deref().and_then(rkube_core::quantity::milli).unwrap_or(0);
    const PERIOD: i64 = 100_000;
    LinuxContainerResources {
        // Upstream's MilliCPUToShares: at least 2.
        cpu_shares: (request_milli * 1024 / 1000).max(2),
        cpu_period: PERIOD,
        cpu_quota: cpu_limit
            .as_deref()
            .and_then(rkube_core::quantity::milli)
            .map_or(0, |m| (m * PERIOD / 1000).max(1000)),
        memory_limit_in_bytes: memory_limit.as_deref().and_then(rkube_core::quantity::value).unwrap_or(0),
        ..Default::default()
    }
}

pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<k8s_cri::v1::Mount>,
) -> ContainerConfig {
    let s = spec(pod);
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = s.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.to_owned(), c.name.clone());
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(ImageSpec { image: c.image.clone().unwrap_or_default(), ..Default::default() }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
        mounts,
        labels,
        annotations: HashMap::from([
            ("io.kubernetes.container.restartCount".to_owned(), attempt.to_string()),
            (
                "io.kubernetes.container.terminationMessagePath".to_owned(),
                c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into()),
            ),
        ]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(c)),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged: sc.privileged.unwrap_or(false),
                namespace_options: Some(namespaces(&s)),
                run_as_user: sc.run_as_user.or(psc.run_as_user).map(|value| Int64Value { value }),
                run_as_group: sc.run_as_group.or(psc.run_as_group).map(|value| Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// CRI mounts for the container's volumeMounts, from each volume's host path; an error names
/// a mount whose volume is not ready.
pub fn mounts(
    c: &Container,
    volumes: &std::collections::BTreeMap<String, std::path::PathBuf>,
) -> Result<Vec<k8s_cri::v1::Mount>, String> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|vm| {
            let base = volumes.get(&vm.name).ok_or_else(|| format!("volume \"{}\" is not ready", vm.name))?;
            let host = match vm.sub_path.as_deref().filter(|p| !p.is_empty()) {
                Some(sub) if sub.split('/').any(|p| p == "..") || sub.starts_with('/') => {
                    return Err(format!("subPath {sub:?} must be a relative path without '..'"));
                }
                Some(sub) => {
                    let path = base.join(sub);
                    if !path.exists() {
                        let _ = std::fs::create_dir_all(&path);
                    }
                    path
                }
                None => base.clone(),
            };
            Ok(k8s_cri::v1::Mount {
                container_path: vm.mount_path.clone(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: vm.read_only.unwrap_or(false),
                ..Default::default()
            })
        })
        .collect()
}

/// The value of a `fieldRef` path, or None for a path the pod does not have.
/// Upstream's service environment variables (`{NAME}_SERVICE_HOST`, `_SERVICE_PORT`, named
/// ports, and the Docker link variables) for the services that have a cluster IP.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let var = |name: &str| name.replace('-', "_").to_uppercase();
    let mut env = Vec::new();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let ports = spec.ports.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = var(&service.metadata.name.clone().unwrap_or_default());
        env.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
        for p in &ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((format!("{prefix}_SERVICE_PORT_{}", var(name)), p.port.to_string()));
            }
        }
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.clone() };
        for (i, p) in ports.iter().enumerate() {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let url = format!("{}://{host}:{}", protocol.to_lowercase(), p.port);
            if i == 0 {
                env.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            env.push((port_prefix.clone(), url));
            env.push((format!("{port_prefix}_PROTO"), protocol.to_lowercase()));
            env.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            env.push((format!("{port_prefix}_ADDR"), ip.clone()));
        }
    }
    env
}

pub fn field_value(pod: &Pod, path: &str, node_name: &str, node_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let status = pod.status.clone().unwrap_or_default();
    let keyed = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => node_name.to_owned(),
        "spec.serviceAccountName" => spec(pod).service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => node_ip.to_owned(),
        "status.podIP" => status.pod_ip.unwrap_or_default(),
        "status.podIPs" => status.pod_ips.iter().flatten().map(|p| p.ip.clone()).collect::<Vec<_>>().join(","),
        _ => return keyed("metadata.labels['", &m.labels).or_else(|| keyed("metadata.annotations['", &m.annotations)),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dns_follows_the_policy_and_merges_dns_config_like_upstream() {
        let host = "# comment\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example\noptions edns0\n";
        let pod = |json: serde_json::Value| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": json}))
                .unwrap()
        };
        let none = super::ClusterDns::default();
        let cluster = super::ClusterDns { servers: vec!["10.43.0.10".into()], domain: "cluster.local".into() };

        // ClusterFirst without cluster DNS falls back to the node's resolver, and says so.
        let (c, missing) = super::dns_config(&pod(serde_json::json!({"containers": []})), &none, host);
        assert!(missing);
        assert_eq!(c.servers, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(c.searches, ["corp.example"]);
        assert_eq!(c.options, ["edns0"]);

        let (c, missing) = super::dns_config(&pod(serde_json::json!({"containers": []})), &cluster, host);
        assert!(!missing);
        assert_eq!(c.servers, ["10.43.0.10"]);
        assert_eq!(c.searches, ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]);
        assert_eq!(c.options, ["ndots:5"]);

        // hostNetwork with ClusterFirst uses the node's; ClusterFirstWithHostNet the cluster's.
        let hn = pod(serde_json::json!({"hostNetwork": true, "containers": []}));
        assert_eq!(super::dns_config(&hn, &cluster, host).0.servers, ["192.0.2.1", "192.0.2.2"]);
        let hn =
            pod(serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []}));
        assert_eq!(super::dns_config(&hn, &cluster, host).0.servers, ["10.43.0.10"]);

        // None takes dnsConfig alone; options override by name.
        let p = pod(serde_json::json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}));
        let (c, missing) = super::dns_config(&p, &cluster, host);
        assert!(!missing);
        assert_eq!(
            (c.servers, c.searches, c.options),
            (vec!["1.1.1.1".into()], vec!["a.example".into()], vec!["ndots:2".into(), "rotate".into()])
        );
        let p = pod(serde_json::json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}));
        assert_eq!(super::dns_config(&p, &cluster, host).0.options, ["ndots:1"]);
    }

    #[test]
    fn service_env_is_upstreams() {
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-db"},
            "spec": {"clusterIP": "10.43.0.7", "ports": [
                {"port": 5432},
                {"name": "metrics", "port": 9187, "protocol": "UDP"}
            ]}
        }))
        .unwrap();
        let headless: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}
        }))
        .unwrap();
        let env = super::service_env(&[service, headless]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_DB_SERVICE_HOST"), Some("10.43.0.7"));
        assert_eq!(get("MY_DB_SERVICE_PORT"), Some("5432"));
        assert_eq!(get("MY_DB_SERVICE_PORT_METRICS"), Some("9187"));
        assert_eq!(get("MY_DB_PORT"), Some("tcp://10.43.0.7:5432"));
        assert_eq!(get("MY_DB_PORT_5432_TCP"), Some("tcp://10.43.0.7:5432"));
        assert_eq!(get("MY_DB_PORT_9187_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_DB_PORT_9187_UDP_ADDR"), Some("10.43.0.7"));
        assert_eq!(env.len(), 12);
        assert!(get("H_SERVICE_HOST").is_none());
    }

    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": spec,
            "status": {"podIP": "10.42.0.5"},
        }))
        .unwrap()
    }

    #[test]
    fn sandbox_config_carries_identity_ports_and_namespaces() {
        let p = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "protocol": "UDP", "hostPort": 5353},
            {"containerPort": 9090},
        ]}]}));
        let config = sandbox_config(&p, 2, Path::new("/logs"));
        let meta = config.metadata.as_ref().unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str(), meta.uid.as_str(), meta.attempt),
            ("web", "ns", "u1", 2)
        );
        assert_eq!(config.log_directory, "/logs/ns_web_u1");
        assert_eq!(config.hostname, "web");
        assert_eq!(config.labels[POD_UID], "u1");
        assert_eq!(config.labels["app"], "web");
        assert_eq!(config.port_mappings.len(), 2);
        assert_eq!((config.port_mappings[1].protocol, config.port_mappings[1].host_port), (1, 5353));
        let ns = config.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!((ns.network, ns.pid, ns.ipc), (POD, CONTAINER, POD));

        let host = pod(json!({"hostNetwork": true, "shareProcessNamespace": true, "containers": [{"name": "c"}]}));
        let config = sandbox_config(&host, 0, Path::new("/logs"));
        assert_eq!(config.hostname, "");
        let ns = config.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!((ns.network, ns.pid), (NODE, POD));
    }

    #[test]
    fn container_config_maps_command_resources_and_security() {
        let p = pod(json!({"securityContext": {"runAsUser": 1000}, "containers": [{
            "name": "c", "image": "busybox:1.35", "command": ["sh", "-c"], "args": ["echo hi"], "workingDir": "/tmp",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
            "securityContext": {"readOnlyRootFilesystem": true, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
        }]}));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let config = container_config(&p, c, 3, vec![("A".into(), "1".into())], vec![]);
        assert_eq!(config.command, ["sh", "-c"]);
        assert_eq!(config.args, ["echo hi"]);
        assert_eq!(config.working_dir, "/tmp");
        assert_eq!(config.log_path, "c/3.log");
        assert_eq!(config.labels[CONTAINER_NAME], "c");
        assert_eq!(config.envs[0].key, "A");
        let linux = config.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes),
            (256, 50_000, 100_000, 64 << 20)
        );
        let sc = linux.security_context.unwrap();
        assert!(sc.readonly_rootfs);
        assert_eq!(sc.run_as_user.map(|u| u.value), Some(1000));
        assert_eq!(sc.capabilities.unwrap().drop_capabilities, ["ALL"]);
        let none = resources(&serde_json::from_value(json!({"name": "c"})).unwrap());
        assert_eq!((none.cpu_shares, none.cpu_quota, none.memory_limit_in_bytes), (2, 0, 0));
    }

    #[test]
    fn mounts_follow_volume_mounts_and_sub_paths() {
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/data", "readOnly": true},
            {"name": "data", "mountPath": "/sub", "subPath": "x"},
        ]}))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let volumes = std::collections::BTreeMap::from([("data".to_owned(), dir.path().to_owned())]);
        let m = mounts(&c, &volumes).unwrap();
        assert_eq!((m[0].container_path.as_str(), m[0].readonly), ("/data", true));
        assert_eq!(m[1].host_path, dir.path().join("x").to_string_lossy());
        assert!(mounts(&c, &Default::default()).unwrap_err().contains("\"data\" is not ready"));
        let escape: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/x", "subPath": "../etc"}]}))
        .unwrap();
        assert!(mounts(&escape, &volumes).is_err());
    }

    #[test]
    fn field_refs_resolve_as_the_downward_api_does() {
        let p = pod(json!({"containers": [{"name": "c"}], "serviceAccountName": "sa"}));
        let v = |path| field_value(&p, path, "node-1", "192.0.2.1");
        assert_eq!(v("metadata.name").as_deref(), Some("web"));
        assert_eq!(v("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(v("metadata.labels['none']").as_deref(), Some(""));
        assert_eq!(v("spec.nodeName").as_deref(), Some("node-1"));
        assert_eq!(v("spec.serviceAccountName").as_deref(), Some("sa"));
        assert_eq!(v("status.podIP").as_deref(), Some("10.42.0.5"));
        assert_eq!(v("status.hostIP").as_deref(), Some("192.0.2.1"));
        assert_eq!(v("spec.bogus"), None);
    }
}
