//! Service cluster IPs and node ports. Each allocated IP or port is a key in the store, created
//! before the service that holds it, so two services can never hold the same one, whichever API
//! server allocated it. Upstream keeps IPAddress objects for the same reason.
//!
//! A crash between reserving and writing the service leaks the reservation; upstream runs a
//! repair loop for that, which rkube does not have yet.

use std::net::Ipv4Addr;
use std::str::FromStr;

use super::*;

/// Upstream's default NodePort range.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An IPv4 range in CIDR notation, such as the service CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR notation (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s:?} does not start with an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?} has an unusable prefix length: a service range needs /8 to /30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr { base: u32::from(ip) & mask, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// The first usable address, which the `kubernetes` service takes.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// Whether `ip` is a usable host address of the range (not its network or broadcast).
    fn holds(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        offset >= 1 && offset < self.size() - 1
    }
}

#[derive(Clone, Debug)]
pub struct Ranges {
    pub cidr: Cidr,
}

impl Ranges {
    pub fn new(cidr: Cidr) -> Ranges {
        Ranges { cidr }
    }
}

fn ip_key(ip: &str) -> String {
    format!("/registry/ranges/serviceips/{ip}")
}

fn port_key(port: i64) -> String {
    format!("/registry/ranges/servicenodeports/{port}")
}

fn random() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

fn uses_node_ports(spec: &Value) -> bool {
    match spec["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec["allocateLoadBalancerNodePorts"] != json!(false),
        _ => false,
    }
}

/// Fills what an update of a service left out from the stored service: its cluster IPs and IP
/// families, and the node port of each port it still has (matched by port and protocol).
pub(super) fn carry_over(service: &mut Value, stored: &Value) {
    let (spec, old) = (&mut service["spec"], &stored["spec"]);
    if spec["clusterIP"].as_str().is_none_or(str::is_empty) && old["clusterIP"].is_string() {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if !old[field].is_null() {
                spec[field] = old[field].clone();
            }
        }
    }
    let held: Vec<&Value> = old["ports"].as_array().into_iter().flatten().collect();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port["nodePort"].as_i64().is_some_and(|p| p != 0) {
                continue;
            }
            let protocol = port["protocol"].as_str().unwrap_or("TCP").to_owned();
            let same =
                held.iter().find(|p| p["port"] == port["port"] && p["protocol"].as_str().unwrap_or("TCP") == protocol);
            if let Some(node_port) = same.and_then(|p| p["nodePort"].as_i64()) {
                port["nodePort"] = json!(node_port);
            }
        }
    }
}

/// The reservation keys a stored service holds.
pub(super) fn held(kind: &Kind, service: &Value) -> Vec<String> {
    if kind.plural != "services" {
        return Vec::new();
    }
    let spec = &service["spec"];
    let mut keys: Vec<String> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None" && !ip.is_empty())
        .map(ip_key)
        .collect();
    keys.extend(spec["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_i64()).map(port_key));
    keys.sort();
    keys.dedup();
    keys
}

/// The reservations `before` held that `after` no longer does.
pub(super) fn dropped(kind: &Kind, before: &Value, after: &Value) -> Vec<String> {
    let kept = held(kind, after);
    held(kind, before).into_iter().filter(|k| !kept.contains(k)).collect()
}

pub(super) async fn release(state: &State, keys: &[String]) {
    for key in keys {
        if let Err(e) = state.store.delete(key, None).await
            && !matches!(e, rkube_store::StoreError::NotFound { .. })
        {
            tracing::warn!("cannot release {key}: {e}");
        }
    }
}

async fn reserve(state: &State, key: &str, owner: &str) -> Result<bool, ApiError> {
    match state.store.create(key, Bytes::from(owner.to_owned())).await {
        Ok(_) => Ok(true),
        Err(rkube_store::StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::from_store(e, "services", owner)),
    }
}

/// Gives a service being written the cluster IP and node ports it needs, keeping those it
/// holds (`stored`). Returns the reservations made, to release if the write fails.
pub(super) async fn allocate(
    state: &State,
    kind: &Kind,
    service: &mut Value,
    stored: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    if kind.plural != "services" {
        return Ok(Vec::new());
    }
    let owner = format!(
        "{}/{}",
        service["metadata"]["namespace"].as_str().unwrap_or_default(),
        service["metadata"]["name"].as_str().unwrap_or_default()
    );
    let mut made = Vec::new();
    let result = allocate_into(state, service, stored, &owner, &mut made).await;
    if result.is_err() {
        release(state, &made).await;
    }
    result.map(|()| made)
}

async fn allocate_into(
    state: &State,
    service: &mut Value,
    stored: Option<&Value>,
    owner: &str,
    made: &mut Vec<String>,
) -> Result<(), ApiError> {
    let invalid = |service: &Value, field: String, message: String| ApiError::Invalid {
        kind: "Service",
        name: service["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        causes: vec![(field, message)],
    };
    let spec = &mut service["spec"];
    let held_ip = stored.and_then(|s| s["spec"]["clusterIP"].as_str()).filter(|ip| !ip.is_empty());
    if spec["type"] == "ExternalName" {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.as_object_mut().map(|m| m.remove(field));
        }
    } else if let Some(ip) = held_ip {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    } else {
        let requested = spec["clusterIP"].as_str().unwrap_or_default().to_owned();
        let ip = if requested == "None" {
            requested
        } else if !requested.is_empty() {
            let parsed: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(
                    service,
                    "spec.clusterIPs[0]".into(),
                    format!("Invalid value: {requested:?}: must be a valid IP address"),
                )
            })?;
            let cidr = state.services.cidr;
            if !cidr.holds(parsed) {
                return Err(invalid(
                    service,
                    "spec.clusterIPs".into(),
                    format!(
                        "Invalid value: []string{{{requested:?}}}: failed to allocate IP {requested}: the provided IP \
                         ({requested}) is not in the valid range. The range of valid IPs is {cidr}"
                    ),
                ));
            }
            if !reserve(state, &ip_key(&requested), owner).await? {
                return Err(invalid(
                    service,
                    "spec.clusterIPs".into(),
                    format!(
                        "Invalid value: []string{{{requested:?}}}: failed to allocate IP {requested}: provided IP is \
                         already allocated"
                    ),
                ));
            }
            made.push(ip_key(&requested));
            requested
        } else {
            let ip = random_ip(state, owner).await?;
            made.push(ip_key(&ip));
            ip
        };
        let spec = &mut service["spec"];
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    let needs_ports = uses_node_ports(&service["spec"]);
    // A LoadBalancer that opts out of node ports still keeps the ones it asks for.
    let keeps_requested = service["spec"]["type"] == "LoadBalancer";
    let held_ports: Vec<i64> = stored
        .map(|s| s["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_i64()).collect())
        .unwrap_or_default();
    // As upstream: ports with the same number (53/TCP and 53/UDP) share one node port, and a
    // node port named twice is reserved once.
    let mut by_number: std::collections::HashMap<i64, i64> = Default::default();
    let mut reserved_here: Vec<i64> = Vec::new();
    let count = service["spec"]["ports"].as_array().map_or(0, Vec::len);
    for i in 0..count {
        let requested = service["spec"]["ports"][i]["nodePort"].as_i64().filter(|p| *p != 0);
        let number = service["spec"]["ports"][i]["port"].as_i64().unwrap_or(0);
        let keep = needs_ports || (keeps_requested && requested.is_some());
        if !keep {
            service["spec"]["ports"][i].as_object_mut().map(|p| p.remove("nodePort"));
            continue;
        }
        let port = match requested.or_else(|| by_number.get(&number).copied()) {
            Some(port) if held_ports.contains(&port) || reserved_here.contains(&port) => port,
            Some(port) => {
                let field = format!("spec.ports[{i}].nodePort");
                if !(i64::from(*NODE_PORTS.start())..=i64::from(*NODE_PORTS.end())).contains(&port) {
                    let message = format!(
                        "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is \
                         {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    );
                    return Err(invalid(service, field, message));
                }
                if !reserve(state, &port_key(port), owner).await? {
                    return Err(invalid(
                        service,
                        field,
                        format!("Invalid value: {port}: provided port is already allocated"),
                    ));
                }
                made.push(port_key(port));
                reserved_here.push(port);
                port
            }
            None => {
                let port = random_port(state, owner).await?;
                made.push(port_key(port));
                reserved_here.push(port);
                port
            }
        };
        by_number.entry(number).or_insert(port);
        service["spec"]["ports"][i]["nodePort"] = json!(port);
    }
    Ok(())
}

/// Tries random addresses, then walks the range, so a nearly full range still allocates.
async fn random_ip(state: &State, owner: &str) -> Result<String, ApiError> {
    let cidr = state.services.cidr;
    let hosts = cidr.size() - 2;
    let start = random() % hosts;
    for step in 0..hosts {
        // Random probes first; past 32 of them, a linear walk from where they started.
        let offset = if step < 32 { random() % hosts } else { (start + step) % hosts };
        let ip = Ipv4Addr::from(cidr.base + 1 + offset).to_string();
        if reserve(state, &ip_key(&ip), owner).await? {
            return Ok(ip);
        }
    }
    Err(ApiError::Internal(format!("failed to allocate a serviceIP: range {cidr} is full")))
}

async fn random_port(state: &State, owner: &str) -> Result<i64, ApiError> {
    let (low, size) = (u32::from(*NODE_PORTS.start()), u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1);
    let start = random() % size;
    for step in 0..size {
        let offset = if step < 32 { random() % size } else { (start + step) % size };
        let port = i64::from(low + offset);
        if reserve(state, &port_key(port), owner).await? {
            return Ok(port);
        }
    }
    Err(ApiError::Internal("failed to allocate a nodePort: range is full".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_bound_their_hosts() {
        let cidr: Cidr = "10.43.7.9/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.43.0.0/16");
        assert_eq!(cidr.first_host(), Ipv4Addr::new(10, 43, 0, 1));
        assert!(cidr.holds(Ipv4Addr::new(10, 43, 255, 254)));
        assert!(!cidr.holds(Ipv4Addr::new(10, 43, 255, 255)), "broadcast");
        assert!(!cidr.holds(Ipv4Addr::new(10, 43, 0, 0)), "network");
        assert!(!cidr.holds(Ipv4Addr::new(10, 44, 0, 1)));
        assert!("10.43.0.0".parse::<Cidr>().is_err());
        assert!("10.43.0.0/31".parse::<Cidr>().is_err());
    }
}
