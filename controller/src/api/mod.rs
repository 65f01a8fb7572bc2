//! The HTTP side of `mycopod serve`: the API routers and the operators' web page.

pub mod ui;
