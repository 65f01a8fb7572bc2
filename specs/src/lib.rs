//! Declarations of mycopod: the YAML kinds, loading with source positions, validation and JSON Schema.
//!
//! Pure: no I/O beyond reading the files it is asked to load.
