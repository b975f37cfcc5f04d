//! The pure core of the API: codecs and patch semantics that need no IO, no tokio and no HTTP,
//! so they are tested as plain functions.
//!
//! - [`protobuf`]: Kubernetes protobuf request bodies decoded to Kubernetes-shaped JSON.
//! - [`quantity`]: resource quantities (`500m`, `1Gi`) as exact integers.
//! - [`smp`]: strategic merge patch, applied server side.
//!
//! It must not know about the store, HTTP or any running component.

pub mod protobuf;
pub mod quantity;
pub mod smp;
