//! Tests of the B-tree file beside the code: model-based property tests,
//! crash tests on the in-memory disk, corruption, failpoints.

mod common;
mod crash;
#[cfg(feature = "failpoints")]
mod failpoints;
mod fixture;
mod model;
mod unit;
