//! `kubectl get` columns for each kind, as upstream's printers
//! (`pkg/printers/internalversion/printers.go`) compute them. Pure: an object in, a cell out.

use serde_json::{Value, json};

use crate::table::{AGE, Column, NAME, human_duration};

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn or_none(s: String) -> Value {
    json!(if s.is_empty() { "<none>".to_owned() } else { s })
}

fn since(timestamp: &Value) -> Option<i64> {
    let t = time::OffsetDateTime::parse(text(timestamp), &time::format_description::well_known::Rfc3339).ok()?;
    Some((time::OffsetDateTime::now_utc() - t).whole_seconds())
}

fn age_of(timestamp: &Value) -> Value {
    json!(since(timestamp).map_or("<unknown>".to_owned(), human_duration))
}

/// `k=v,k2=v2` of a string map, sorted as Go prints maps.
fn pairs(map: &Value) -> String {
    let mut entries: Vec<String> =
        map.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", text(v))).collect();
    entries.sort();
    entries.join(",")
}

/// A label selector object in its string form.
fn selector(s: &Value) -> Value {
    match crate::selector::LabelSelector::from_object(s) {
        Ok(parsed) if !parsed.is_empty() => json!(parsed.to_query()),
        _ => json!("<none>"),
    }
}

pub(super) const DEFAULT: &[Column] = &[NAME, AGE];

pub(super) const NAMESPACE: &[Column] =
    &[NAME, Column::new("Status", "The status of the namespace", |o| o["status"]["phase"].clone()), AGE];

pub(super) const CONFIGMAP: &[Column] = &[
    NAME,
    Column::new("Data", "Number of data entries", |o| {
        let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
        json!(count("data") + count("binaryData"))
    })
    .integer(),
    AGE,
];

pub(super) const SECRET: &[Column] = &[
    NAME,
    Column::new("Type", "The type of the secret", |o| o["type"].clone()),
    Column::new("Data", "Number of data entries", |o| json!(o["data"].as_object().map_or(0, |m| m.len()))).integer(),
    AGE,
];

pub(super) const SERVICEACCOUNT: &[Column] = &[
    NAME,
    Column::new("Secrets", "Number of secrets referenced by the service account", |o| json!(len(&o["secrets"])))
        .integer(),
    AGE,
];

const POD_DESCRIPTION: &str = "The aggregate readiness state of this pod for accepting traffic.";

pub(super) const POD: &[Column] = &[
    NAME,
    Column::new("Ready", POD_DESCRIPTION, |o| {
        let statuses = o["status"]["containerStatuses"].as_array().map(Vec::as_slice).unwrap_or_default();
        let ready = statuses.iter().filter(|s| s["ready"] == json!(true)).count();
        json!(format!("{ready}/{}", len(&o["spec"]["containers"])))
    }),
    Column::new("Status", "The aggregate status of the containers in this pod.", |o| json!(pod_status(o))),
    Column::new("Restarts", "The number of times the containers in this pod have been restarted.", |o| {
        json!(pod_restarts(o))
    }),
    AGE,
    Column::new("IP", "IP address assigned to pod", |o| or_none(text(&o["status"]["podIP"]).to_owned())).wide(),
    Column::new("Node", "Name of the node assigned to the pod", |o| or_none(text(&o["spec"]["nodeName"]).to_owned()))
        .wide(),
    Column::new("Nominated Node", "Name of the node nominated for the pod", |o| {
        or_none(text(&o["status"]["nominatedNodeName"]).to_owned())
    })
    .wide(),
    Column::new("Readiness Gates", "Readiness gates of the pod", |o| {
        let gates = o["spec"]["readinessGates"].as_array().map(Vec::as_slice).unwrap_or_default();
        if gates.is_empty() {
            return json!("<none>");
        }
        let conditions = o["status"]["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
        let met = gates
            .iter()
            .filter(|g| conditions.iter().any(|c| c["type"] == g["conditionType"] && c["status"] == "True"))
            .count();
        json!(format!("{met}/{}", gates.len()))
    })
    .wide(),
];

/// The STATUS column of a pod: the phase, refined by container states as upstream prints it.
pub(super) fn pod_status(pod: &Value) -> String {
    let status = &pod["status"];
    let mut reason = text(&status["phase"]).to_owned();
    if let Some(r) = status["reason"].as_str().filter(|r| !r.is_empty()) {
        reason = r.to_owned();
    }
    let init_total = len(&pod["spec"]["initContainers"]);
    let mut initializing = false;
    for (i, c) in status["initContainerStatuses"].as_array().into_iter().flatten().enumerate() {
        let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
        if terminated.is_object() && terminated["exitCode"] == json!(0) {
            continue;
        }
        if c["started"] == json!(true) && c["ready"] == json!(true) && c["state"]["running"].is_object() {
            // A restartable (sidecar) init container that is running counts as done.
            continue;
        }
        initializing = true;
        reason = if terminated.is_object() {
            match (text(&terminated["reason"]), terminated["signal"].as_i64().unwrap_or(0)) {
                ("", 0) => format!("Init:ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or(0)),
                ("", signal) => format!("Init:Signal:{signal}"),
                (r, _) => format!("Init:{r}"),
            }
        } else if waiting.is_object() && !text(&waiting["reason"]).is_empty() && waiting["reason"] != "PodInitializing"
        {
            format!("Init:{}", text(&waiting["reason"]))
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        let statuses = status["containerStatuses"].as_array().map(Vec::as_slice).unwrap_or_default();
        for c in statuses.iter().rev() {
            let state = &c["state"];
            if let Some(r) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_owned();
            } else if state["terminated"].is_object() {
                let t = &state["terminated"];
                reason = match (text(&t["reason"]), t["signal"].as_i64().unwrap_or(0)) {
                    ("", 0) => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                    ("", signal) => format!("Signal:{signal}"),
                    (r, _) => r.to_owned(),
                };
            } else if state["running"].is_object() && c["ready"] == json!(true) {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if ready { "Running" } else { "NotReady" }.to_owned();
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if status["reason"] == "NodeLost" { "Unknown" } else { "Terminating" }.to_owned();
    }
    reason
}

/// The RESTARTS column: the sum over containers, with how long ago the last one was.
fn pod_restarts(pod: &Value) -> String {
    let mut restarts = 0;
    let mut last: Option<i64> = None;
    let status = &pod["status"];
    for list in ["initContainerStatuses", "containerStatuses"] {
        for c in status[list].as_array().into_iter().flatten() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            if let Some(ago) = since(&c["lastState"]["terminated"]["finishedAt"]) {
                last = Some(last.map_or(ago, |l: i64| l.min(ago)));
            }
        }
    }
    match last {
        Some(ago) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(ago)),
        _ => restarts.to_string(),
    }
}

fn ports(o: &Value) -> String {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    ports.join(",")
}

fn external_ip(o: &Value) -> String {
    let spec = &o["spec"];
    let external: Vec<String> =
        spec["externalIPs"].as_array().into_iter().flatten().map(|v| text(v).to_owned()).collect();
    match text(&spec["type"]) {
        "ExternalName" => text(&spec["externalName"]).to_owned(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| text(if i["ip"].is_string() { &i["ip"] } else { &i["hostname"] }).to_owned())
                .collect();
            ips.extend(external);
            if ips.is_empty() { "<pending>".into() } else { ips.join(",") }
        }
        _ if !external.is_empty() => external.join(","),
        _ => "<none>".into(),
    }
}

pub(super) const SERVICE: &[Column] = &[
    NAME,
    Column::new("Type", "The type of the service.", |o| o["spec"]["type"].clone()),
    Column::new("Cluster-IP", "The IP address of the service.", |o| or_none(text(&o["spec"]["clusterIP"]).into())),
    Column::new("External-IP", "The external IP address of the service.", |o| json!(external_ip(o))),
    Column::new("Port(s)", "The ports of the service.", |o| or_none(ports(o))),
    AGE,
    Column::new("Selector", "The label selector of the service.", |o| or_none(pairs(&o["spec"]["selector"]))).wide(),
];

pub(super) const ENDPOINTS: &[Column] = &[
    NAME,
    Column::new("Endpoints", "Endpoints of the service.", |o| {
        let mut shown = Vec::new();
        let mut total = 0;
        for subset in o["subsets"].as_array().into_iter().flatten() {
            for address in subset["addresses"].as_array().into_iter().flatten() {
                let ports: Vec<&Value> = subset["ports"].as_array().into_iter().flatten().collect();
                if ports.is_empty() {
                    total += 1;
                    shown.push(text(&address["ip"]).to_owned());
                }
                for port in ports {
                    total += 1;
                    shown.push(format!("{}:{}", text(&address["ip"]), port["port"]));
                }
            }
        }
        if shown.len() > 3 {
            let more = total - 3;
            shown.truncate(3);
            return json!(format!("{} + {more} more...", shown.join(",")));
        }
        or_none(shown.join(","))
    }),
    AGE,
];

fn node_status(o: &Value) -> String {
    let mut states: Vec<&str> = Vec::new();
    for c in o["status"]["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "Ready" {
            // Upstream prints NotReady for False and Unknown alike.
            states.push(if text(&c["status"]) == "True" { "Ready" } else { "NotReady" });
        }
    }
    if states.is_empty() {
        states.push("Unknown");
    }
    if o["spec"]["unschedulable"] == json!(true) {
        states.push("SchedulingDisabled");
    }
    states.join(",")
}

fn node_address(o: &Value, kind: &str) -> Value {
    let address = o["status"]["addresses"].as_array().into_iter().flatten().find(|a| a["type"] == kind);
    or_none(address.map(|a| text(&a["address"]).to_owned()).unwrap_or_default())
}

pub(super) const NODE: &[Column] = &[
    NAME,
    Column::new("Status", "The status of the node", |o| json!(node_status(o))),
    Column::new("Roles", "The roles of the node", |o| {
        let mut roles: Vec<String> = o["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(str::to_owned))
            .filter(|r| !r.is_empty())
            .collect();
        roles.sort();
        or_none(roles.join(","))
    }),
    AGE,
    Column::new("Version", "Kubelet Version reported by the node.", |o| {
        o["status"]["nodeInfo"]["kubeletVersion"].clone()
    }),
    Column::new("Internal-IP", "List of internal IPs in the node.", |o| node_address(o, "InternalIP")).wide(),
    Column::new("External-IP", "List of external IPs in the node.", |o| node_address(o, "ExternalIP")).wide(),
    Column::new("OS-Image", "OS image reported by the node.", |o| o["status"]["nodeInfo"]["osImage"].clone()).wide(),
    Column::new("Kernel-Version", "Kernel version reported by the node.", |o| {
        o["status"]["nodeInfo"]["kernelVersion"].clone()
    })
    .wide(),
    Column::new("Container-Runtime", "Container runtime reported by the node.", |o| {
        o["status"]["nodeInfo"]["containerRuntimeVersion"].clone()
    })
    .wide(),
];

/// A field of a core/v1 Event, or its events.k8s.io/v1 name: both versions print alike.
fn event_field<'a>(o: &'a Value, core: &str) -> &'a Value {
    if !o[core].is_null() {
        return &o[core];
    }
    let renamed = match core {
        "involvedObject" => "regarding",
        "message" => "note",
        "source" => "deprecatedSource",
        "firstTimestamp" => "deprecatedFirstTimestamp",
        "lastTimestamp" => "deprecatedLastTimestamp",
        "count" => "deprecatedCount",
        other => other,
    };
    &o[renamed]
}

pub(super) const EVENT: &[Column] = &[
    Column::new("Last Seen", "Time when last this event was seen.", |o| {
        let last =
            if event_field(o, "lastTimestamp").is_string() { event_field(o, "lastTimestamp") } else { &o["eventTime"] };
        age_of(last)
    }),
    Column::new("Type", "Type of this event.", |o| o["type"].clone()),
    Column::new("Reason", "Reason why this event was generated.", |o| o["reason"].clone()),
    Column::new("Object", "The object this event is about.", |o| {
        let involved = event_field(o, "involvedObject");
        json!(format!("{}/{}", text(&involved["kind"]).to_lowercase(), text(&involved["name"])))
    }),
    Column::new("Subobject", "The subobject this event is about.", |o| {
        event_field(o, "involvedObject")["fieldPath"].clone()
    })
    .wide(),
    Column::new("Source", "The component reporting this event.", |o| {
        let source = event_field(o, "source");
        let host = text(&source["host"]);
        json!(if host.is_empty() {
            text(&source["component"]).to_owned()
        } else {
            format!("{}, {host}", text(&source["component"]))
        })
    })
    .wide(),
    Column::new("Message", "A human-readable description of the status of this operation.", |o| {
        json!(text(event_field(o, "message")).trim())
    }),
    Column::new("First Seen", "Time when this event was first seen.", |o| age_of(event_field(o, "firstTimestamp")))
        .wide(),
    Column::new("Count", "Number of times this event has been seen.", |o| event_field(o, "count").clone())
        .integer()
        .wide(),
    Column { priority: 1, ..NAME },
];

pub(super) const PV: &[Column] = &[
    NAME,
    Column::new("Capacity", "Capacity of the volume", |o| o["spec"]["capacity"]["storage"].clone()),
    Column::new("Access Modes", "Access modes of the volume", |o| json!(access_modes(&o["spec"]["accessModes"]))),
    Column::new("Reclaim Policy", "Reclaim policy", |o| o["spec"]["persistentVolumeReclaimPolicy"].clone()),
    Column::new("Status", "Phase of the volume", |o| o["status"]["phase"].clone()),
    Column::new("Claim", "The claim bound to the volume", |o| {
        let claim = &o["spec"]["claimRef"];
        json!(if claim.is_object() {
            format!("{}/{}", text(&claim["namespace"]), text(&claim["name"]))
        } else {
            String::new()
        })
    }),
    Column::new("StorageClass", "Storage class of the volume", |o| json!(text(&o["spec"]["storageClassName"]))),
    Column::new("VolumeAttributesClass", "Volume attributes class", |o| {
        or_none(text(&o["spec"]["volumeAttributesClassName"]).to_owned())
    }),
    Column::new("Reason", "Reason for the phase", |o| json!(text(&o["status"]["reason"]))),
    AGE,
    Column::new("VolumeMode", "Volume mode", |o| o["spec"]["volumeMode"].clone()).wide(),
];

fn access_modes(modes: &Value) -> String {
    let short: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match text(m) {
            "ReadWriteOnce" => Some("RWO"),
            "ReadOnlyMany" => Some("ROX"),
            "ReadWriteMany" => Some("RWX"),
            "ReadWriteOncePod" => Some("RWOP"),
            _ => None,
        })
        .collect();
    short.join(",")
}

pub(super) const PVC: &[Column] = &[
    NAME,
    Column::new("Status", "Phase of the claim", |o| o["status"]["phase"].clone()),
    Column::new("Volume", "The volume bound to the claim", |o| json!(text(&o["spec"]["volumeName"]))),
    Column::new("Capacity", "Capacity of the bound volume", |o| json!(text(&o["status"]["capacity"]["storage"]))),
    Column::new("Access Modes", "Access modes of the bound volume", |o| {
        json!(access_modes(&o["status"]["accessModes"]))
    }),
    Column::new("StorageClass", "Storage class of the claim", |o| json!(text(&o["spec"]["storageClassName"]))),
    Column::new("VolumeAttributesClass", "Volume attributes class", |o| {
        or_none(text(&o["spec"]["volumeAttributesClassName"]).to_owned())
    }),
    AGE,
    Column::new("VolumeMode", "Volume mode", |o| o["spec"]["volumeMode"].clone()).wide(),
];

/// The CONTAINERS and IMAGES columns of a workload's pod template.
fn template_field(o: &Value, field: &str) -> Value {
    let template = if o["spec"]["jobTemplate"].is_object() {
        &o["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &o["spec"]["template"]
    };
    let values: Vec<&str> =
        template["spec"]["containers"].as_array().into_iter().flatten().map(|c| text(&c[field])).collect();
    json!(values.join(","))
}

const CONTAINERS: Column =
    Column::new("Containers", "Names of each container in the template.", |o| template_field(o, "name")).wide();
const IMAGES: Column =
    Column::new("Images", "Images referenced by each container in the template.", |o| template_field(o, "image"))
        .wide();
const SELECTOR: Column =
    Column::new("Selector", "Label selector of the workload.", |o| selector(&o["spec"]["selector"])).wide();

fn count(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

/// READY as `ready/desired` replicas, for Deployments and StatefulSets.
const READY_OF_DESIRED: Column = Column::new("Ready", "Number of the pod with ready state", |o| {
    json!(format!("{}/{}", count(&o["status"]["readyReplicas"]), count(&o["spec"]["replicas"])))
});

pub(super) const DEPLOYMENT: &[Column] = &[
    NAME,
    READY_OF_DESIRED,
    Column::new(
        "Up-to-date",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        |o| count(&o["status"]["updatedReplicas"]),
    )
    .integer(),
    Column::new(
        "Available",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        |o| count(&o["status"]["availableReplicas"]),
    )
    .integer(),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const REPLICA_SET: &[Column] = &[
    NAME,
    Column::new("Desired", "Number of desired pods", |o| count(&o["spec"]["replicas"])).integer(),
    Column::new("Current", "Number of actual pods", |o| count(&o["status"]["replicas"])).integer(),
    Column::new("Ready", "Number of ready pods", |o| count(&o["status"]["readyReplicas"])).integer(),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const REPLICATION_CONTROLLER: &[Column] = REPLICA_SET;

pub(super) const STATEFUL_SET: &[Column] = &[NAME, READY_OF_DESIRED, AGE, CONTAINERS, IMAGES];

pub(super) const DAEMON_SET: &[Column] = &[
    NAME,
    Column::new("Desired", "The desired number of daemon pods.", |o| count(&o["status"]["desiredNumberScheduled"]))
        .integer(),
    Column::new("Current", "The current number of daemon pods.", |o| count(&o["status"]["currentNumberScheduled"]))
        .integer(),
    Column::new("Ready", "The number of daemon pods ready.", |o| count(&o["status"]["numberReady"])).integer(),
    Column::new("Up-to-date", "The number of daemon pods that run the desired template.", |o| {
        count(&o["status"]["updatedNumberScheduled"])
    })
    .integer(),
    Column::new("Available", "The number of daemon pods available.", |o| count(&o["status"]["numberAvailable"]))
        .integer(),
    Column::new("Node Selector", "The node selector of the daemon pods.", |o| {
        or_none(pairs(&o["spec"]["template"]["spec"]["nodeSelector"]))
    }),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const CONTROLLER_REVISION: &[Column] = &[
    NAME,
    Column::new("Controller", "The controller of the revision.", |o| {
        let owner =
            o["metadata"]["ownerReferences"].as_array().into_iter().flatten().find(|r| r["controller"] == json!(true));
        or_none(
            owner
                .map(|r| {
                    let group = text(&r["apiVersion"]).split_once('/').map_or("", |(g, _)| g);
                    let kind = text(&r["kind"]).to_lowercase();
                    let kind = if group.is_empty() { kind } else { format!("{kind}.{group}") };
                    format!("{kind}/{}", text(&r["name"]))
                })
                .unwrap_or_default(),
        )
    }),
    Column::new("Revision", "The revision number.", |o| count(&o["revision"])).integer(),
    AGE,
];

fn job_status(o: &Value) -> &'static str {
    let conditions = o["status"]["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
    let holds = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
    if holds("Failed") {
        "Failed"
    } else if holds("Complete") {
        "Complete"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else if holds("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if holds("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

pub(super) const JOB: &[Column] = &[
    NAME,
    Column::new("Status", "Status of the job.", |o| json!(job_status(o))),
    Column::new("Completions", "The completion status of the job.", |o| {
        let succeeded = o["status"]["succeeded"].as_i64().unwrap_or(0);
        json!(match o["spec"]["completions"].as_i64() {
            Some(completions) => format!("{succeeded}/{completions}"),
            None => format!("{succeeded}/1 of {}", o["spec"]["parallelism"].as_i64().unwrap_or(1)),
        })
    }),
    Column::new("Duration", "Time required to complete the job.", |o| {
        let status = &o["status"];
        let Some(started) = since(&status["startTime"]) else { return json!("") };
        let running = match since(&status["completionTime"]) {
            Some(finished) => started - finished,
            None => started,
        };
        json!(human_duration(running))
    }),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const CRON_JOB: &[Column] = &[
    NAME,
    Column::new("Schedule", "The schedule of the job.", |o| o["spec"]["schedule"].clone()),
    Column::new("Timezone", "The time zone of the schedule.", |o| or_none(text(&o["spec"]["timeZone"]).to_owned())),
    Column::new("Suspend", "Whether the job is suspended.", |o| json!(o["spec"]["suspend"] == json!(true))),
    Column::new("Active", "The number of running jobs.", |o| json!(len(&o["status"]["active"]))).integer(),
    Column::new("Last Schedule", "When the job last ran.", |o| {
        if o["status"]["lastScheduleTime"].is_string() {
            age_of(&o["status"]["lastScheduleTime"])
        } else {
            json!("<none>")
        }
    }),
    AGE,
    CONTAINERS,
    IMAGES,
    Column::new("Selector", "Label selector of the job template.", |o| {
        selector(&o["spec"]["jobTemplate"]["spec"]["selector"])
    })
    .wide(),
];

pub(super) const LEASE: &[Column] =
    &[NAME, Column::new("Holder", "The holder of the lease.", |o| json!(text(&o["spec"]["holderIdentity"]))), AGE];

pub(super) const ENDPOINT_SLICE: &[Column] = &[
    NAME,
    Column::new("AddressType", "The address type of the slice.", |o| o["addressType"].clone()),
    Column::new("Ports", "The ports of the slice.", |o| {
        let ports: Vec<String> = o["ports"].as_array().into_iter().flatten().map(|p| p["port"].to_string()).collect();
        or_none(ports.join(","))
    }),
    Column::new("Endpoints", "The addresses of the slice.", |o| {
        let addresses: Vec<&str> = o["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["addresses"].as_array().into_iter().flatten().map(text))
            .collect();
        if addresses.len() > 3 {
            return json!(format!("{} + {} more...", addresses[..3].join(","), addresses.len() - 3));
        }
        or_none(addresses.join(","))
    }),
    AGE,
];

pub(super) const COMPONENT_STATUS: &[Column] = &[
    NAME,
    Column::new("Status", "Status of the component.", |o| {
        let healthy =
            o["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Healthy" && c["status"] == "True");
        json!(if healthy { "Healthy" } else { "Unhealthy" })
    }),
    Column::new("Message", "Message of the component.", |o| o["conditions"][0]["message"].clone()),
    Column::new("Error", "Error of the component.", |o| o["conditions"][0]["error"].clone()),
];

/// The table upstream gives kinds without a printer: NAME and CREATED AT.
pub(super) const CREATED: &[Column] = &[
    NAME,
    Column {
        name: "Created At",
        kind: "date",
        format: "",
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
        priority: 0,
        cell: |o| o["metadata"]["creationTimestamp"].clone(),
    },
];

fn int_or_string(v: &Value) -> Value {
    match v {
        Value::Null => json!("N/A"),
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

pub(super) const PDB: &[Column] = &[
    NAME,
    Column::new("Min Available", "The minimum number of pods that must be available.", |o| {
        int_or_string(&o["spec"]["minAvailable"])
    }),
    Column::new("Max Unavailable", "The maximum number of pods that may be unavailable.", |o| {
        int_or_string(&o["spec"]["maxUnavailable"])
    }),
    Column::new("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time.", |o| {
        count(&o["status"]["disruptionsAllowed"])
    })
    .integer(),
    AGE,
];

pub(super) const PRIORITY_CLASS: &[Column] = &[
    NAME,
    Column::new("Value", "The value of this priority class.", |o| count(&o["value"])).integer(),
    Column {
        kind: "boolean",
        ..Column::new("Global-Default", "Whether this is the default class.", |o| {
            json!(o["globalDefault"] == json!(true))
        })
    },
    AGE,
    Column::new("PreemptionPolicy", "The preemption policy of this class.", |o| json!(text(&o["preemptionPolicy"]))),
];

pub(super) const STORAGE_CLASS: &[Column] = &[
    Column {
        cell: |o| {
            let annotations = &o["metadata"]["annotations"];
            let default =
                ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
                    .iter()
                    .any(|a| annotations[*a] == "true");
            let name = text(&o["metadata"]["name"]);
            json!(if default { format!("{name} (default)") } else { name.to_owned() })
        },
        ..NAME
    },
    Column::new("Provisioner", "The provisioner of the class.", |o| o["provisioner"].clone()),
    Column::new("ReclaimPolicy", "The reclaim policy of the class.", |o| {
        json!(o["reclaimPolicy"].as_str().unwrap_or("Delete"))
    }),
    Column::new("VolumeBindingMode", "When volumes are bound.", |o| {
        json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate"))
    }),
    Column {
        kind: "boolean",
        ..Column::new("AllowVolumeExpansion", "Whether volumes may grow.", |o| {
            json!(o["allowVolumeExpansion"] == json!(true))
        })
    },
    AGE,
];

pub(super) const NETWORK_POLICY: &[Column] =
    &[NAME, Column::new("Pod-Selector", "The pods the policy selects.", |o| selector(&o["spec"]["podSelector"])), AGE];

pub(super) const INGRESS_CLASS: &[Column] = &[
    NAME,
    Column::new("Controller", "The controller of the class.", |o| o["spec"]["controller"].clone()),
    Column::new("Parameters", "The parameters of the class.", |o| {
        let p = &o["spec"]["parameters"];
        if !p.is_object() {
            return json!("<none>");
        }
        let kind = match p["apiGroup"].as_str() {
            Some(group) if !group.is_empty() => format!("{}.{group}", text(&p["kind"])),
            _ => text(&p["kind"]).to_owned(),
        };
        json!(format!("{kind}/{}", text(&p["name"])))
    }),
    AGE,
];

pub(super) const INGRESS: &[Column] = &[
    NAME,
    Column::new("Class", "The class of the ingress.", |o| or_none(text(&o["spec"]["ingressClassName"]).to_owned())),
    Column::new("Hosts", "The hosts the ingress serves.", |o| {
        let hosts: Vec<&str> = o["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| text(&r["host"]))
            .filter(|h| !h.is_empty())
            .collect();
        json!(match hosts.len() {
            0 => "*".to_owned(),
            n if n > 3 => format!("{} + {} more...", hosts[..3].join(","), n - 3),
            _ => hosts.join(","),
        })
    }),
    Column::new("Address", "The address of the ingress.", |o| {
        let addresses: Vec<&str> = o["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| text(if i["ip"].is_string() { &i["ip"] } else { &i["hostname"] }))
            .collect();
        json!(addresses.join(","))
    }),
    Column::new("Ports", "The ports of the ingress.", |o| {
        json!(if len(&o["spec"]["tls"]) > 0 { "80, 443" } else { "80" })
    }),
    AGE,
];

fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = o["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == kind)
        .map(|s| match kind {
            "ServiceAccount" => format!("{}:{}", text(&s["namespace"]), text(&s["name"])),
            _ => text(&s["name"]).to_owned(),
        })
        .collect();
    json!(names.join(", "))
}

pub(super) const ROLE_BINDING: &[Column] = &[
    NAME,
    Column::new("Role", "The role of the binding.", |o| {
        json!(format!("{}/{}", text(&o["roleRef"]["kind"]), text(&o["roleRef"]["name"])))
    }),
    AGE,
    Column::new("Users", "The users bound.", |o| subjects(o, "User")).wide(),
    Column::new("Groups", "The groups bound.", |o| subjects(o, "Group")).wide(),
    Column::new("ServiceAccounts", "The service accounts bound.", |o| subjects(o, "ServiceAccount")).wide(),
];

pub(super) const RESOURCE_QUOTA: &[Column] = &[
    NAME,
    Column::new("Request", "Resources requested and their limits.", |o| json!(quota(o, false))),
    Column::new("Limit", "Resource limits and their use.", |o| json!(quota(o, true))),
    AGE,
];

fn quota(o: &Value, limits: bool) -> String {
    let used = &o["status"]["used"];
    let mut entries: Vec<String> = o["status"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("limits.") == limits)
        .map(|(k, hard)| format!("{k}: {}/{}", used[k].as_str().unwrap_or("0"), text(hard)))
        .collect();
    entries.sort();
    entries.join(", ")
}

pub(super) const HPA: &[Column] = &[
    NAME,
    Column::new("Reference", "The object being scaled.", |o| {
        let target = &o["spec"]["scaleTargetRef"];
        json!(format!("{}/{}", text(&target["kind"]), text(&target["name"])))
    }),
    Column::new("Targets", "The metrics and their targets.", |o| json!(hpa_targets(o))),
    Column::new("MinPods", "The fewest replicas.", |o| match o["spec"]["minReplicas"].as_i64() {
        Some(n) => json!(n.to_string()),
        None => json!("<unset>"),
    }),
    Column::new("MaxPods", "The most replicas.", |o| count(&o["spec"]["maxReplicas"])).integer(),
    Column::new("Replicas", "The current replicas.", |o| count(&o["status"]["currentReplicas"])).integer(),
    AGE,
];

fn hpa_targets(o: &Value) -> String {
    // The autoscaling/v1 view has one CPU target.
    if let Some(target) = o["spec"]["targetCPUUtilizationPercentage"].as_i64() {
        let now =
            o["status"]["currentCPUUtilizationPercentage"].as_i64().map_or("<unknown>".into(), |u| format!("{u}%"));
        return format!("cpu: {now}/{target}%");
    }
    let metrics = o["spec"]["metrics"].as_array().map(Vec::as_slice).unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = o["status"]["currentMetrics"].as_array().map(Vec::as_slice).unwrap_or_default();
    let shown: Vec<String> = metrics
        .iter()
        .take(2)
        .map(|m| {
            let kind = text(&m["type"]);
            let (key, spec) = match kind {
                "Resource" => ("resource", &m["resource"]),
                "ContainerResource" => ("containerResource", &m["containerResource"]),
                "Pods" => ("pods", &m["pods"]),
                "Object" => ("object", &m["object"]),
                _ => ("external", &m["external"]),
            };
            let now = current
                .iter()
                .find(|c| c["type"] == kind && c[key]["name"] == spec["name"])
                .map(|c| &c[key]["current"]);
            let target = &spec["target"];
            match target["averageUtilization"].as_i64() {
                Some(utilization) => {
                    let now = now
                        .and_then(|c| c["averageUtilization"].as_i64())
                        .map_or("<unknown>".to_owned(), |u| format!("{u}%"));
                    format!("{}: {now}/{utilization}%", text(&spec["name"]))
                }
                None => {
                    let want = target["averageValue"].as_str().or(target["value"].as_str()).unwrap_or("<auto>");
                    let now =
                        now.and_then(|c| c["averageValue"].as_str().or(c["value"].as_str())).unwrap_or("<unknown>");
                    let name = spec["name"].as_str().or(spec["metric"]["name"].as_str()).unwrap_or_default();
                    format!("{name}: {now}/{want}")
                }
            }
        })
        .collect();
    let more = metrics.len().saturating_sub(2);
    if more > 0 { format!("{} + {more} more...", shown.join(", ")) } else { shown.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_reads_container_states() {
        let pod = |statuses: Value| json!({"spec": {"containers": [{}]}, "status": {"phase": "Running", "containerStatuses": statuses}});
        assert_eq!(pod_status(&pod(json!([{"state": {"running": {}}, "ready": true}]))), "Running");
        assert_eq!(
            pod_status(&pod(json!([{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]))),
            "CrashLoopBackOff"
        );
        assert_eq!(pod_status(&pod(json!([{"state": {"terminated": {"exitCode": 2}}}]))), "ExitCode:2");
        let mut deleting = pod(json!([]));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pod_status(&deleting), "Terminating");
        let init = json!({"spec": {"initContainers": [{}, {}]}, "status": {"phase": "Pending",
            "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}, {"state": {"running": {}}}]}});
        assert_eq!(pod_status(&init), "Init:1/2");
    }

    #[test]
    fn service_columns() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"b": "2", "a": "1"}}});
        assert_eq!(ports(&svc), "80:30080/TCP");
        assert_eq!(external_ip(&svc), "<none>");
        assert_eq!(pairs(&svc["spec"]["selector"]), "a=1,b=2");
        let lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(external_ip(&lb), "<pending>");
    }

    #[test]
    fn hpa_targets_read_as_upstream() {
        let hpa = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
        ]}, "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}]}});
        assert_eq!(hpa_targets(&hpa), "cpu: 45%/80%, memory: <unknown>/100Mi + 1 more...");
        assert_eq!(hpa_targets(&json!({"spec": {}})), "<none>");
    }

    #[test]
    fn quota_columns_split_requests_from_limits() {
        let quota = json!({"status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
                                      "used": {"pods": "3", "limits.cpu": "500m"}}});
        assert_eq!(super::quota(&quota, false), "pods: 3/10, requests.cpu: 0/1");
        assert_eq!(super::quota(&quota, true), "limits.cpu: 500m/2");
    }

    #[test]
    fn node_status_column() {
        let node =
            json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(node_status(&node), "Ready,SchedulingDisabled");
    }
}
