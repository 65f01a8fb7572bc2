//! The specs crate's integration tests, as one binary: each module is one former test file,
//! named as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod diagnostics;
mod examples;
mod hostile;
mod loading;
mod mutations;
