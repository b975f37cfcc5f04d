//! Shared helpers: build real k8s-pb messages and wrap them the way
//! client-go's protobuf serializer does.
#![allow(dead_code)]

use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;

/// `k8s\0` + runtime.Unknown{typeMeta, raw, "", ""} like client-go writes.
pub fn envelope(api_version: &str, kind: &str, obj: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

pub fn q(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

pub fn int_port(v: i32) -> Option<IntOrString> {
    Some(IntOrString { r#type: Some(0), int_val: Some(v), str_val: Some(String::new()) })
}

pub fn str_port(v: &str) -> Option<IntOrString> {
    Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: s(v) })
}

/// ObjectMeta as Go writes it: every non-pointer field present, unset ones
/// as "" / 0, and a zero creationTimestamp as an empty message.
pub fn go_meta(name: &str, namespace: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(Time::default()),
        ..Default::default()
    })
}

/// Deserializes into the k8s-openapi type and serializes back: any key our
/// decoder misnamed would be silently dropped by serde and show up here.
pub fn openapi_roundtrip<T>(v: &serde_json::Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(v.clone()).expect("deserializes into k8s-openapi type");
    assert_eq!(&serde_json::to_value(&typed).unwrap(), v, "k8s-openapi round trip changed the JSON");
    typed
}
