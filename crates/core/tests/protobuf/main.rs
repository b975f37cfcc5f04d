//! Protobuf request bodies: real objects encoded with k8s-pb (prost) the way client-go encodes
//! them, decoded and compared with upstream's JSON; the special types; and hostile input.

mod common;
mod objects;
mod robustness;
mod special;
