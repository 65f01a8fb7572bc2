//! Declarations of mycopod: the seven YAML kinds as typed Rust, loading with the source
//! position of every field, semantic validation that collects every finding, rendering of
//! findings (human, JSON, GitHub), and the JSON Schema of the format.
//!
//! The design decision: positions are kept *beside* the typed values, not inside them. Each
//! document gets a [`SourceMap`] from field paths (`spec.registers[2].address`) to line and
//! column, built from the YAML event stream, and the typed structs stay plain data. Any later
//! step that finds a problem with a field (the validator here, the planner in the controller)
//! asks the resource's [`Source`] for the position of that path.
//!
//! Typical use:
//!
//! ```no_run
//! let loaded = mycopod_specs::load_path(std::path::Path::new("examples/plant"))?;
//! match mycopod_specs::check(&loaded) {
//!     Ok(checked) => println!("{} devices", checked.desired.devices.len()),
//!     Err(findings) => print!("{}", mycopod_specs::render::render_human(&findings, &loaded)),
//! }
//! # Ok::<(), mycopod_specs::LoadError>(())
//! ```
//!
//! Pure: no I/O beyond reading the files it is asked to load; no network, no database, no clock.

pub mod desired;
pub mod diagnostic;
pub mod kinds;
pub mod load;
pub mod render;
pub mod schema;
pub mod source;
mod tree;
pub mod validate;
pub mod values;

pub use desired::{Checked, DesiredState, Resource, check};
pub use diagnostic::{Code, Diagnostic, Severity};
pub use load::{
    Document, Limits, LoadError, Loaded, SourceFile, Typed, load_path, load_path_with, load_str,
};
pub use source::{Position, Source, SourceMap};
pub use validate::validate;
