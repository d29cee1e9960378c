//! No code: see Cargo.toml. This crate only fixes the features its dependencies are built with.
