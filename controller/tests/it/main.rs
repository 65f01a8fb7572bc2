//! The controller's integration tests, as one binary (one link instead of twenty-one): each
//! module is one former test file, named as before; the support modules are shared.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod browser;
#[macro_use]
mod store_support;
mod support;

mod api_declarations;
mod api_matrix;
mod api_router;
mod api_smoke;
mod api_telemetry;
mod apply_cli;
mod apply_sim;
mod crash;
mod driver;
mod observe_cost;
mod plan_cli;
mod run_lifecycle;
mod serve_cost;
mod serve_log;
mod store_cli;
mod store_concurrency;
mod store_conformance;
mod telemetry_sim;
mod translate;
mod translate_cli;
mod ui_assets;
mod ui_browser;
mod ui_status;
mod validate_cli;
