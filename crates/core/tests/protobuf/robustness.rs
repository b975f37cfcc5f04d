//! Upstream wire bytes, error reporting, protobuf edge cases, and fuzz-ish
//! checks that no input panics.

use crate::common::*;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use rkube_core::protobuf::{DecodeError, decode, decode_message};
use serde_json::json;

/// client-go's protobuf body for `Pod{ObjectMeta{Name: "snorlax"}}`, from
/// the TestClientContentType expectation in kubernetes PR 125314
/// (staging/src/k8s.io/client-go/kubernetes/typed/core/v1 client tests).
/// Note how Go writes every non-pointer field: "" strings, 0, false, and the
/// zero creationTimestamp as an empty message.
const UPSTREAM_POD: &[u8] = b"k8s\x00\n\t\n\x02v1\x12\x03Pod\x12I\n\x17\n\x07snorlax\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x1c\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\x1a\x10\n\x00\x1a\x00\"\x00*\x002\x00J\x00Z\x00r\x00\x1a\x00\"\x00";

/// The same test in newer Kubernetes (PodStatus gained observedGeneration).
const UPSTREAM_POD_NEWER: &[u8] = b"k8s\x00\n\t\n\x02v1\x12\x03Pod\x12\x4c\n\x17\n\x07snorlax\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x1c\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\x1a\x13\n\x00\x1a\x00\"\x00*\x002\x00J\x00Z\x00r\x00\x88\x01\x00\x1a\x00\"\x00";

#[test]
fn upstream_client_go_pod() {
    let spec = json!({"hostNetwork": false, "hostPID": false, "hostIPC": false});
    let v = decode(UPSTREAM_POD).unwrap();
    let expected =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "snorlax"}, "spec": spec, "status": {}});
    assert_eq!(v, expected);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(v).unwrap();
    assert_eq!(pod.metadata.namespace, None);

    let v = decode(UPSTREAM_POD_NEWER).unwrap();
    assert_eq!(v["status"], json!({"observedGeneration": 0}));
    assert_eq!(v["spec"], spec);

    // Cross-check our reading of the bytes with prost's.
    let env = rkube_core::protobuf::envelope(UPSTREAM_POD).unwrap();
    let pod = core::Pod::decode(env.raw).unwrap();
    assert_eq!(pod.metadata.unwrap().name.as_deref(), Some("snorlax"));
    assert_eq!(pod.spec.unwrap().host_ipc, Some(false));
}

fn pod_raw(bytes: Vec<u8>) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta { api_version: s("v1"), kind: s("Pod") }),
        raw: Some(bytes),
        ..Default::default()
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

#[test]
fn error_messages() {
    let err = |body: &[u8]| decode(body).unwrap_err().to_string();
    assert_eq!(err(b"{\"kind\":\"Pod\"}"), "bad magic: protobuf body does not start with \"k8s\\0\"");
    assert_eq!(err(b"k8s"), err(b"{}"));
    assert_eq!(err(&envelope("apps/v1", "Foo", &core::Pod::default())), "unknown kind `apps/v1, Kind=Foo`");
    assert_eq!(err(b"k8s\0"), "envelope has no apiVersion or kind");
    assert_eq!(err(b"k8s\0\x0a\x80"), "truncated varint in k8s.io.apimachinery.pkg.runtime.Unknown");
    assert_eq!(
        err(b"k8s\0\x0a\x05\x0a\x02v1"),
        "truncated k8s.io.apimachinery.pkg.runtime.Unknown: value needs 5 bytes but only 4 remain"
    );
    assert_eq!(err(&pod_raw(vec![0x08, 0x01])), "wrong wire type 0 for field metadata of k8s.io.api.core.v1.Pod");
    assert_eq!(err(&pod_raw(vec![0x00])), "invalid field number 0 in k8s.io.api.core.v1.Pod");
    assert_eq!(err(&pod_raw(vec![0x9b, 0x06])), "unsupported wire type 3 in k8s.io.api.core.v1.Pod");
    assert_eq!(err(&pod_raw(vec![0x0b])), "wrong wire type 3 for field metadata of k8s.io.api.core.v1.Pod");
    let mut overflow = vec![0x98, 0x06];
    overflow.extend([0xff; 11]);
    assert_eq!(err(&pod_raw(overflow)), "varint longer than 64 bits in k8s.io.api.core.v1.Pod");
    // Nested: ObjectMeta.name (tag 1) sent as a varint.
    assert_eq!(
        err(&pod_raw(vec![0x0a, 0x02, 0x08, 0x01])),
        "wrong wire type 0 for field name of k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    let mut gz = rkube_core::protobuf::envelope(UPSTREAM_POD).unwrap();
    gz.content_encoding = "gzip".into();
    let u = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta { api_version: s("v1"), kind: s("Pod") }),
        raw: Some(gz.raw.to_vec()),
        content_encoding: s("gzip"),
        content_type: None,
    };
    let body = [b"k8s\0".as_slice(), &u.encode_to_vec()].concat();
    assert_eq!(err(&body), "unsupported content encoding \"gzip\" (only identity is supported)");
    assert!(matches!(decode_message("no.such.Type", &[]), Err(DecodeError::UnknownMessageType(_))));
    assert_eq!(rkube_core::protobuf::message_type("apps/v1", "Deployment"), Some("k8s.io.api.apps.v1.Deployment"));
    assert_eq!(rkube_core::protobuf::message_type("v1", "Deployment"), None);
}

#[test]
fn protobuf_semantics() {
    // A singular message field sent twice is merged (protobuf + Go semantics).
    let a = core::Pod { metadata: Some(meta::ObjectMeta { name: s("a"), ..Default::default() }), ..Default::default() };
    let b = core::Pod {
        metadata: Some(meta::ObjectMeta { namespace: s("ns"), ..Default::default() }),
        ..Default::default()
    };
    let v = decode(&pod_raw([a.encode_to_vec(), b.encode_to_vec()].concat())).unwrap();
    assert_eq!(v["metadata"], json!({"name": "a", "namespace": "ns"}));

    // Unknown fields of every wire type are skipped.
    let mut raw = a.encode_to_vec();
    raw.extend([0xb8, 0x3e, 0x05]); // field 999 varint
    raw.extend([0xb9, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8]); // field 999 fixed64
    raw.extend([0xba, 0x3e, 0x01, 0x00]); // field 999 bytes
    raw.extend([0xbd, 0x3e, 1, 2, 3, 4]); // field 999 fixed32
    assert_eq!(decode(&pod_raw(raw)).unwrap()["metadata"], json!({"name": "a"}));

    // Repeated ints: unpacked (what Go writes) and packed both decode.
    let name = "k8s.io.api.core.v1.PodPortForwardOptions";
    let unpacked = core::PodPortForwardOptions { ports: vec![80, -1] }.encode_to_vec();
    assert_eq!(decode_message(name, &unpacked).unwrap(), json!({"ports": [80, -1]}));
    let packed = [0x0a, 0x0b, 80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(decode_message(name, &packed).unwrap(), json!({"ports": [80, -1]}));

    // Doubles that JSON cannot hold are rejected, not turned into null.
    let props = k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1::JsonSchemaProps {
        maximum: Some(f64::NAN),
        ..Default::default()
    };
    let name = "k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
    let err = decode_message(name, &props.encode_to_vec()).unwrap_err();
    assert!(err.to_string().starts_with("invalid value for field maximum"), "{err}");
}

/// A body exercising most code paths (maps, lists, specials, inline).
fn rich_body() -> Vec<u8> {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            labels: [("a".to_string(), "b".to_string())].into(),
            creation_timestamp: Some(meta::Time { seconds: Some(1_700_000_000), nanos: Some(0) }),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                ports: vec![core::ContainerPort { container_port: Some(80), ..Default::default() }],
                resources: Some(core::ResourceRequirements {
                    limits: [("cpu".to_string(), q("1"))].into(),
                    ..Default::default()
                }),
                liveness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction { port: str_port("http"), ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("v"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource { size_limit: Some(q("1Gi")), ..Default::default() }),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        status: None,
    };
    envelope("v1", "Pod", &pod)
}

#[test]
fn truncation_at_every_offset_never_panics() {
    let body = rich_body();
    assert!(decode(&body).is_ok());
    for i in 0..body.len() {
        let _ = decode(&body[..i]);
    }
    // Truncate inside the object while keeping a valid envelope, so the
    // errors come from deep inside the Pod rather than the envelope.
    let raw = rkube_core::protobuf::envelope(&body).unwrap().raw.to_vec();
    let mut errors = 0;
    for i in 0..raw.len() {
        errors += usize::from(decode(&pod_raw(raw[..i].to_vec())).is_err());
    }
    assert!(errors > 0);
}

/// xorshift64*: deterministic pseudo-random bytes without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `RKUBE_FUZZ_SCALE=n` runs n times as many rounds, each with its own seed, for a longer
/// local run.
#[test]
fn random_mutations_never_panic() {
    let scale: u64 = std::env::var("RKUBE_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    for seed in 0..scale {
        mutate(30_000, 0x9e37_79b9_7f4a_7c15 ^ seed);
    }
}

fn mutate(rounds: usize, seed: u64) {
    let mut rng = Rng(seed);
    // A watch event embedding a whole Pod body exercises RawExtension recursion.
    let raw = k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(rich_body()) };
    let watch = meta::WatchEvent { r#type: s("ADDED"), object: Some(raw) };
    let bodies =
        [rich_body(), UPSTREAM_POD.to_vec(), UPSTREAM_POD_NEWER.to_vec(), envelope("v1", "WatchEvent", &watch)];
    let (mut ok, mut err) = (0, 0);
    for round in 0..rounds {
        let mut body = bodies[round % bodies.len()].clone();
        for _ in 0..=rng.below(4) {
            let i = 4 + rng.below(body.len() - 4); // keep the magic
            body[i] = match rng.below(3) {
                0 => body[i] ^ (1 << rng.below(8)),
                1 => rng.next() as u8,
                _ => [0x00, 0x80, 0xff, 0x7f][rng.below(4)],
            };
        }
        match decode(&body) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok > 0 && err > 0, "mutations should hit both outcomes: ok={ok} err={err}");
}

#[test]
fn random_garbage_objects_never_panic() {
    let mut rng = Rng(42);
    let kinds = [
        ("v1", "Pod"),
        ("apps/v1", "Deployment"),
        ("v1", "Secret"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("v1", "WatchEvent"),
    ];
    for round in 0..20_000 {
        let len = rng.below(64);
        let raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let (av, kind) = kinds[round % kinds.len()];
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta { api_version: s(av), kind: s(kind) }),
            raw: Some(raw),
            ..Default::default()
        };
        let _ = decode(&[b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat());
    }
}
