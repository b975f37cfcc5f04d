//! Strategic merge patch: data-driven cases mirroring upstream's `patch_test.go`, the shapes
//! kubectl sends, malformed patches, and a no-panic fuzz loop.

mod common;
mod directives;
mod errors;
mod fuzz;
mod kubectl;
mod lists;
mod maps;
