//! The node's CNI network: a bridge with host-local IPAM over the node's podCIDR, portmap for
//! hostPorts, and loopback, from Debian's containernetworking-plugins. containerd's CRI plugin
//! reads the conflist and runs the plugins for each sandbox.

use std::path::Path;

use serde_json::json;

use crate::Error;

/// The bridge's name, unique per podCIDR so that several agents' bridges can share one host
/// (tests do); at most 15 characters, as Linux allows.
pub fn bridge_name(pod_cidr: &str) -> String {
    let octets: Vec<u8> =
        pod_cidr.split('/').next().unwrap_or_default().split('.').filter_map(|o| o.parse().ok()).collect();
    let hex: String = octets.iter().take(3).map(|o| format!("{o:02x}")).collect();
    format!("rk{hex}")
}

/// `data_dir` keeps host-local's allocations, apart from any other CNI user on the host.
pub fn conflist(pod_cidr: &str, data_dir: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "rkube",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name(pod_cidr),
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": data_dir,
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

/// The bridge the conflist in `conf_dir` names, if there is one.
pub fn installed_bridge(conf_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(conf_dir.join("10-rkube.conflist")).ok()?;
    let list: serde_json::Value = serde_json::from_str(&text).ok()?;
    list["plugins"][0]["bridge"].as_str().map(str::to_owned)
}

/// Writes the conflist when it differs from what is there; containerd picks it up.
pub fn install(conf_dir: &Path, pod_cidr: &str) -> Result<bool, Error> {
    let path = conf_dir.join("10-rkube.conflist");
    let text = serde_json::to_string_pretty(&conflist(pod_cidr, &conf_dir.join("networks"))).expect("json");
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(conf_dir).map_err(|e| Error::Io(conf_dir.to_owned(), e))?;
    let tmp = conf_dir.join(".10-rkube.conflist.tmp");
    std::fs::write(&tmp, &text).map_err(|e| Error::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Io(path, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_linux_and_differ_per_range() {
        assert_eq!(bridge_name("10.42.0.0/24"), "rk0a2a00");
        assert_eq!(bridge_name("10.42.17.0/24"), "rk0a2a11");
        assert!(bridge_name("255.255.255.0/24").len() <= 15);
    }

    #[test]
    fn conflist_uses_the_pod_cidr() {
        let list = conflist("10.42.3.0/24", Path::new("/d"));
        assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/d");
        assert_eq!(list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(list["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn install_rewrites_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        assert!(install(dir.path(), "10.42.0.0/24").unwrap());
        assert!(!install(dir.path(), "10.42.0.0/24").unwrap());
        assert!(install(dir.path(), "10.42.1.0/24").unwrap());
        assert_eq!(installed_bridge(dir.path()).as_deref(), Some("rk0a2a01"));
    }
}
