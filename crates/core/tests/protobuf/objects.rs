//! Real objects built with k8s-pb, encoded with prost the way Go encodes
//! them (non-pointer fields always present), decoded, and compared with the
//! JSON Kubernetes would produce; then checked against k8s-openapi.

use std::collections::BTreeMap;

use crate::common::*;
use k8s_openapi::api::{apps::v1 as oapps, core::v1 as ocore, policy::v1 as opolicy};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as OIntOrString;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::json;

fn map<V: Clone>(kv: &[(&str, V)]) -> BTreeMap<String, V> {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn pod() -> core::Pod {
    let mut metadata = go_meta("web", "default").unwrap();
    metadata.creation_timestamp = Some(meta::Time { seconds: Some(1_704_164_645), nanos: Some(123) });
    metadata.labels = map(&[("app", "web".to_string())]);
    metadata.annotations = map(&[("note", String::new())]);
    let container = core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        command: vec!["nginx".into()],
        args: vec!["-g".into(), "daemon off;".into()],
        working_dir: s(""),
        ports: vec![core::ContainerPort {
            name: s("http"),
            host_port: Some(0),
            container_port: Some(80),
            protocol: s("TCP"),
            host_ip: s(""),
        }],
        env: vec![
            core::EnvVar { name: s("MODE"), value: s("prod"), value_from: None },
            core::EnvVar { name: s("EMPTY"), value: s(""), value_from: None },
            core::EnvVar {
                name: s("POD_IP"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    field_ref: Some(core::ObjectFieldSelector { api_version: s("v1"), field_path: s("status.podIP") }),
                    ..Default::default()
                }),
            },
            core::EnvVar {
                name: s("PASSWORD"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    secret_key_ref: Some(core::SecretKeySelector {
                        local_object_reference: Some(core::LocalObjectReference { name: s("creds") }),
                        key: s("pw"),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(core::ResourceRequirements {
            limits: map(&[("cpu", q("500m")), ("memory", q("128Mi"))]),
            requests: map(&[("cpu", q("100m"))]),
            ..Default::default()
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: str_port("http"),
                    host: s(""),
                    scheme: s("HTTP"),
                    http_headers: vec![],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            timeout_seconds: Some(0),
            period_seconds: Some(0),
            success_threshold: Some(0),
            failure_threshold: Some(0),
            termination_grace_period_seconds: None,
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                tcp_socket: Some(core::TcpSocketAction { port: int_port(8080), host: s("") }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        termination_message_path: s(""),
        image_pull_policy: s("IfNotPresent"),
        stdin: Some(false),
        ..Default::default()
    };
    core::Pod {
        metadata: Some(metadata),
        spec: Some(core::PodSpec {
            volumes: vec![
                core::Volume {
                    name: s("cache"),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource { medium: s(""), size_limit: None }),
                        ..Default::default()
                    }),
                },
                core::Volume {
                    name: s("creds"),
                    volume_source: Some(core::VolumeSource {
                        secret: Some(core::SecretVolumeSource {
                            secret_name: s("creds"),
                            default_mode: Some(420),
                            optional: Some(false),
                            items: vec![],
                        }),
                        ..Default::default()
                    }),
                },
            ],
            containers: vec![container],
            restart_policy: s("Always"),
            termination_grace_period_seconds: Some(0),
            dns_policy: s(""),
            host_network: Some(false),
            host_ipc: Some(false),
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s(""),
            pod_ips: vec![core::PodIp { ip: s("10.0.0.1") }],
            ..Default::default()
        }),
    }
}

#[test]
fn pod_matches_kubernetes_json() {
    let v = rkube_core::protobuf::decode(&envelope("v1", "Pod", &pod())).unwrap();
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "labels": {"app": "web"},
            "annotations": {"note": ""}
        },
        "spec": {
            "volumes": [
                {"name": "cache", "emptyDir": {}},
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 420, "optional": false}}
            ],
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "command": ["nginx"],
                "args": ["-g", "daemon off;"],
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "EMPTY"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}}
                ],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "initialDelaySeconds": 0
                },
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5},
                "imagePullPolicy": "IfNotPresent",
                "stdin": false
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0,
            "hostNetwork": false,
            "hostIPC": false,
            "automountServiceAccountToken": false
        },
        "status": {"podIPs": [{"ip": "10.0.0.1"}]}
    });
    assert_eq!(v, expected);

    let typed: ocore::Pod = openapi_roundtrip(&v);
    let spec = typed.spec.unwrap();
    let c = &spec.containers[0];
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "500m");
    let probe_port = &c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().port;
    assert_eq!(probe_port, &OIntOrString::String("http".into()));
    let tcp_port = &c.readiness_probe.as_ref().unwrap().tcp_socket.as_ref().unwrap().port;
    assert_eq!(tcp_port, &OIntOrString::Int(8080));
    assert_eq!(spec.termination_grace_period_seconds, Some(0));
    assert_eq!(spec.host_ipc, Some(false));
    assert!(spec.volumes.unwrap()[0].empty_dir.is_some());
    assert_eq!(typed.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(typed.metadata.generate_name, None, "empty generateName must not look set");
}

#[test]
fn deployment_keeps_zero_replicas_and_intstr_percent() {
    let mut template_meta = go_meta("", "").unwrap();
    template_meta.labels = map(&[("app", "web".to_string())]);
    let d = apps::Deployment {
        metadata: go_meta("web", "default"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: map(&[("app", "web".into())]),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container { name: s("nginx"), image: s("nginx"), ..Default::default() }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: str_port("25%"),
                    max_surge: str_port("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
            paused: Some(false),
            progress_deadline_seconds: Some(600),
        }),
        status: Some(apps::DeploymentStatus { observed_generation: Some(0), replicas: Some(0), ..Default::default() }),
    };
    let v = rkube_core::protobuf::decode(&envelope("apps/v1", "Deployment", &d)).unwrap();
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "minReadySeconds": 0,
            "revisionHistoryLimit": 10,
            "paused": false,
            "progressDeadlineSeconds": 600
        },
        "status": {"observedGeneration": 0, "replicas": 0}
    });
    assert_eq!(v, expected);
    let typed: oapps::Deployment = openapi_roundtrip(&v);
    let spec = typed.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_surge, Some(OIntOrString::String("25%".into())));
}

#[test]
fn secret_bytes_are_base64() {
    let secret = core::Secret {
        metadata: go_meta("creds", "default"),
        immutable: None,
        data: map(&[("bin", vec![0u8, 1, 2, 255, 254]), ("empty", vec![])]),
        string_data: BTreeMap::new(),
        r#type: s("Opaque"),
    };
    let v = rkube_core::protobuf::decode(&envelope("v1", "Secret", &secret)).unwrap();
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"bin": "AAEC//4=", "empty": ""},
        "type": "Opaque"
    });
    assert_eq!(v, expected);
    let typed: ocore::Secret = openapi_roundtrip(&v);
    assert_eq!(typed.data.unwrap()["bin"].0, vec![0u8, 1, 2, 255, 254]);
}

#[test]
fn configmap_data_and_binary_data() {
    let cm = core::ConfigMap {
        metadata: go_meta("cfg", "default"),
        immutable: Some(true),
        data: map(&[("k", "v".into()), ("blank", String::new())]),
        binary_data: map(&[("b", b"hi".to_vec())]),
    };
    let v = rkube_core::protobuf::decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
    let expected = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        "immutable": true,
        "data": {"k": "v", "blank": ""},
        "binaryData": {"b": "aGk="}
    });
    assert_eq!(v, expected);
    openapi_roundtrip::<ocore::ConfigMap>(&v);
}

#[test]
fn namespace_like_kubectl_create_namespace() {
    let ns = core::Namespace {
        metadata: go_meta("team-a", ""),
        spec: Some(core::NamespaceSpec { finalizers: vec![] }),
        status: Some(core::NamespaceStatus { phase: s(""), conditions: vec![] }),
    };
    let v = rkube_core::protobuf::decode(&envelope("v1", "Namespace", &ns)).unwrap();
    let expected = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-a"}, "spec": {}, "status": {}
    });
    assert_eq!(v, expected);
    let typed: ocore::Namespace = openapi_roundtrip(&v);
    assert_eq!(typed.metadata.namespace, None, "cluster-scoped object must not get namespace \"\"");
}

#[test]
fn service_dual_stack() {
    let svc = core::Service {
        metadata: go_meta("web", "default"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("http"),
                protocol: s("TCP"),
                app_protocol: None,
                port: Some(80),
                target_port: int_port(8080),
                node_port: Some(0),
            }],
            selector: map(&[("app", "web".into())]),
            cluster_ip: s("10.96.0.10"),
            cluster_ips: vec!["10.96.0.10".into(), "fd00::10".into()],
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            ip_families: vec!["IPv4".into(), "IPv6".into()],
            ip_family_policy: s("PreferDualStack"),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let v = rkube_core::protobuf::decode(&envelope("v1", "Service", &svc)).unwrap();
    let expected = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00::10"],
            "type": "ClusterIP",
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "publishNotReadyAddresses": false
        },
        "status": {}
    });
    assert_eq!(v, expected);
    let typed: ocore::Service = openapi_roundtrip(&v);
    assert_eq!(typed.spec.unwrap().ports.unwrap()[0].node_port, None, "nodePort 0 means allocate");
}

#[test]
fn eviction_with_delete_options() {
    let ev = policy::Eviction {
        metadata: go_meta("web", "default"),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(meta::Preconditions { uid: s("1234"), resource_version: None }),
            orphan_dependents: None,
            propagation_policy: s("Foreground"),
            dry_run: vec!["All".into()],
            ignore_store_read_error_with_cluster_breaking_potential: None,
        }),
    };
    let v = rkube_core::protobuf::decode(&envelope("policy/v1", "Eviction", &ev)).unwrap();
    let expected = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "web", "namespace": "default"},
        "deleteOptions": {
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": "1234"},
            "propagationPolicy": "Foreground",
            "dryRun": ["All"]
        }
    });
    assert_eq!(v, expected);
    let typed: opolicy::Eviction = openapi_roundtrip(&v);
    assert_eq!(typed.delete_options.unwrap().grace_period_seconds, Some(0));
}

#[test]
fn pvc_keeps_empty_storage_class() {
    let pvc = core::PersistentVolumeClaim {
        metadata: go_meta("data", "default"),
        spec: Some(core::PersistentVolumeClaimSpec {
            access_modes: vec!["ReadWriteOnce".into()],
            storage_class_name: s(""),
            volume_mode: s(""),
            ..Default::default()
        }),
        status: None,
    };
    let v = rkube_core::protobuf::decode(&envelope("v1", "PersistentVolumeClaim", &pvc)).unwrap();
    assert_eq!(v["spec"], json!({"accessModes": ["ReadWriteOnce"], "storageClassName": ""}));
    openapi_roundtrip::<ocore::PersistentVolumeClaim>(&v);
}

#[test]
fn delete_options_in_any_group() {
    let opts = meta::DeleteOptions { propagation_policy: s("Background"), ..Default::default() };
    for av in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        let v = rkube_core::protobuf::decode(&envelope(av, "DeleteOptions", &opts)).unwrap();
        assert_eq!(v, json!({"apiVersion": av, "kind": "DeleteOptions", "propagationPolicy": "Background"}));
    }
    let err = rkube_core::protobuf::decode(&envelope("nosuch.k8s.io/v1", "DeleteOptions", &opts)).unwrap_err();
    assert_eq!(err.to_string(), "unknown kind `nosuch.k8s.io/v1, Kind=DeleteOptions`");
}
