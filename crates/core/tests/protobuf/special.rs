//! Messages with custom JSON forms: Time, MicroTime, Duration, RawExtension,
//! FieldsV1, Verbs, JSONSchemaProps unions.

use crate::common::*;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::events::v1 as events;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::RawExtension;
use prost::Message;
use serde_json::json;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

fn time(seconds: i64, nanos: i32) -> serde_json::Value {
    let t = meta::Time { seconds: Some(seconds), nanos: Some(nanos) };
    rkube_core::protobuf::decode_message(&format!("{META}.Time"), &t.encode_to_vec()).unwrap()
}

#[test]
fn time_formats() {
    assert_eq!(time(1_704_164_645, 999_999_999), json!("2024-01-02T03:04:05Z"));
    assert_eq!(time(0, 0), json!("1970-01-01T00:00:00Z"));
    assert_eq!(time(-1, 0), json!("1969-12-31T23:59:59Z"));
    assert_eq!(time(951_782_400, 0), json!("2000-02-29T00:00:00Z"));
    // Like Go's time.Unix, out-of-range nanos carry into the seconds.
    assert_eq!(time(10, -1), json!("1970-01-01T00:00:09Z"));
    assert_eq!(time(253_402_300_799, 0), json!("9999-12-31T23:59:59Z"));
    // Go's zero time (and an empty message) are null.
    assert_eq!(time(-62_135_596_800, 0), json!(null));
    assert_eq!(rkube_core::protobuf::decode_message(&format!("{META}.Time"), &[]).unwrap(), json!(null));
    let err = rkube_core::protobuf::decode_message(
        &format!("{META}.Time"),
        &meta::Time { seconds: Some(i64::MAX), nanos: None }.encode_to_vec(),
    );
    assert!(err.unwrap_err().to_string().contains("timestamp out of range"));
}

#[test]
fn micro_time_has_six_digits() {
    let mt = |s, n| {
        let t = meta::MicroTime { seconds: Some(s), nanos: Some(n) };
        rkube_core::protobuf::decode_message(&format!("{META}.MicroTime"), &t.encode_to_vec()).unwrap()
    };
    assert_eq!(mt(1_704_164_645, 123_456_789), json!("2024-01-02T03:04:05.123456Z"));
    assert_eq!(mt(1_704_164_645, 0), json!("2024-01-02T03:04:05.000000Z"));
}

#[test]
fn duration_matches_go() {
    let cases = [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (250_000_000, "250ms"),
        (1_000_000_000, "1s"),
        (60_000_000_000, "1m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2_000_000_000, "-2s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ];
    for (ns, want) in cases {
        let d = meta::Duration { duration: Some(ns) };
        let got = rkube_core::protobuf::decode_message(&format!("{META}.Duration"), &d.encode_to_vec()).unwrap();
        assert_eq!(got, json!(want), "{ns}ns");
    }
}

#[test]
fn event_micro_time_and_managed_fields() {
    let mut metadata = go_meta("ev1", "default").unwrap();
    metadata.managed_fields = vec![meta::ManagedFieldsEntry {
        manager: s("kubectl"),
        operation: s("Update"),
        api_version: s("events.k8s.io/v1"),
        time: Some(meta::Time { seconds: Some(1_704_164_645), nanos: Some(0) }),
        fields_type: s("FieldsV1"),
        fields_v1: Some(meta::FieldsV1 { raw: Some(br#"{"f:note":{}}"#.to_vec()) }),
        subresource: s(""),
    }];
    let ev = events::Event {
        metadata: Some(metadata),
        event_time: Some(meta::MicroTime { seconds: Some(1_704_164_645), nanos: Some(42_000) }),
        reporting_controller: s("me"),
        reporting_instance: s("me-1"),
        action: s("Test"),
        reason: s("Testing"),
        note: s("hello"),
        r#type: s("Normal"),
        deprecated_first_timestamp: Some(meta::Time::default()),
        deprecated_last_timestamp: Some(meta::Time::default()),
        deprecated_count: Some(0),
        ..Default::default()
    };
    let v = rkube_core::protobuf::decode(&envelope("events.k8s.io/v1", "Event", &ev)).unwrap();
    let expected = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {
            "name": "ev1", "namespace": "default",
            "managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "events.k8s.io/v1",
                "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:note": {}}
            }]
        },
        "eventTime": "2024-01-02T03:04:05.000042Z",
        "reportingController": "me", "reportingInstance": "me-1",
        "action": "Test", "reason": "Testing", "note": "hello", "type": "Normal",
        "deprecatedCount": 0
    });
    assert_eq!(v, expected);
    openapi_roundtrip::<k8s_openapi::api::events::v1::Event>(&v);
}

#[test]
fn raw_extension_json_and_nested_protobuf() {
    let cr = apps::ControllerRevision {
        metadata: go_meta("rev", "default"),
        data: Some(RawExtension { raw: Some(br#"{"spec":{"template":{"x":[1,2]}}}"#.to_vec()) }),
        revision: Some(3),
    };
    let v = rkube_core::protobuf::decode(&envelope("apps/v1", "ControllerRevision", &cr)).unwrap();
    assert_eq!(v["data"], json!({"spec": {"template": {"x": [1, 2]}}}));
    assert_eq!(v["revision"], json!(3));
    openapi_roundtrip::<k8s_openapi::api::apps::v1::ControllerRevision>(&v);

    // Watch events embed whole protobuf objects (with their own envelope).
    let inner = envelope("apps/v1", "ControllerRevision", &cr);
    let we = meta::WatchEvent { r#type: s("ADDED"), object: Some(RawExtension { raw: Some(inner) }) };
    let v = rkube_core::protobuf::decode(&envelope("v1", "WatchEvent", &we)).unwrap();
    assert_eq!(v["type"], json!("ADDED"));
    assert_eq!(v["object"]["kind"], json!("ControllerRevision"));
    assert_eq!(v["object"]["data"]["spec"]["template"]["x"], json!([1, 2]));

    let bad = apps::ControllerRevision { data: Some(RawExtension { raw: Some(b"{nope".to_vec()) }), ..cr };
    let err = rkube_core::protobuf::decode(&envelope("apps/v1", "ControllerRevision", &bad)).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid value for field raw of k8s.io.apimachinery.pkg.runtime.RawExtension"),
        "{err}"
    );
}

#[test]
fn verbs_are_a_plain_array() {
    let r = meta::APIResource {
        name: s("pods"),
        namespaced: Some(true),
        kind: s("Pod"),
        verbs: Some(meta::Verbs { items: vec!["get".into(), "list".into()] }),
        ..Default::default()
    };
    let v = rkube_core::protobuf::decode_message(&format!("{META}.APIResource"), &r.encode_to_vec()).unwrap();
    assert_eq!(v, json!({"name": "pods", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"]}));
}

#[test]
fn crd_schema_unions_and_names() {
    let string = ext::JsonSchemaProps { r#type: s("string"), ..Default::default() };
    let spec_schema = ext::JsonSchemaProps {
        r#type: s("object"),
        r#ref: s("#/defs/x"),
        schema: s("http://json-schema.org/draft-04/schema#"),
        properties: [("name".to_string(), string.clone())].into(),
        additional_properties: Some(Box::new(ext::JsonSchemaPropsOrBool { allows: Some(true), schema: None })),
        items: Some(Box::new(ext::JsonSchemaPropsOrArray {
            schema: Some(Box::new(string.clone())),
            j_son_schemas: vec![],
        })),
        dependencies: [(
            "a".to_string(),
            ext::JsonSchemaPropsOrStringArray { schema: None, property: vec!["b".into()] },
        )]
        .into(),
        default: Some(ext::Json { raw: Some(br#"{"name":"x"}"#.to_vec()) }),
        r#enum: vec![ext::Json { raw: Some(b"1".to_vec()) }, ext::Json { raw: Some(b"\"two\"".to_vec()) }],
        x_kubernetes_preserve_unknown_fields: Some(true),
        x_kubernetes_list_type: s("atomic"),
        ..Default::default()
    };
    let v = rkube_core::protobuf::decode_message(
        "k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
        &spec_schema.encode_to_vec(),
    )
    .unwrap();
    let expected = json!({
        "type": "object",
        "$ref": "#/defs/x",
        "$schema": "http://json-schema.org/draft-04/schema#",
        "properties": {"name": {"type": "string"}},
        "additionalProperties": true,
        "items": {"type": "string"},
        "dependencies": {"a": ["b"]},
        "default": {"name": "x"},
        "enum": [1, "two"],
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-list-type": "atomic"
    });
    assert_eq!(v, expected);
    openapi_roundtrip::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps>(&v);

    let or_bool = ext::JsonSchemaPropsOrBool { allows: Some(true), schema: Some(Box::new(string)) };
    let name = "k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool";
    assert_eq!(
        rkube_core::protobuf::decode_message(name, &or_bool.encode_to_vec()).unwrap(),
        json!({"type": "string"})
    );
    assert_eq!(rkube_core::protobuf::decode_message(name, &[]).unwrap(), json!(false));
}

#[test]
fn nested_message_limit() {
    // JSONSchemaProps.not is recursive: nest it past the limit.
    let mut p = ext::JsonSchemaProps::default();
    for _ in 0..rkube_core::protobuf::MAX_DEPTH + 5 {
        p = ext::JsonSchemaProps { not: Some(Box::new(p)), ..Default::default() };
    }
    let name = "k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
    let err = rkube_core::protobuf::decode_message(name, &p.encode_to_vec()).unwrap_err();
    assert_eq!(err, rkube_core::protobuf::DecodeError::TooDeep(rkube_core::protobuf::MAX_DEPTH));
    assert_eq!(err.to_string(), "nesting too deep (more than 100 levels)");
}
