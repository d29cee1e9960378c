// Empty: it exists so that the [build-dependencies] of Cargo.toml take part in feature
// unification for the host.
fn main() {}
