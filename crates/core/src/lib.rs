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

/// Request headers that carry an upgrade's negotiation (SPDY or WebSocket) from a client
/// through the API server and the node API to the runtime; the rest stay behind.
pub const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
