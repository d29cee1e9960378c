//! The fixtures in `data/fixtures/`: JSON written by the scripts beside them with an
//! independent framework (JAX/Flax, optax), carrying their inputs, their weights and the
//! outputs that framework computed. Arrays are flat, in row-major order, their shapes beside
//! them.

use crate::support::device;
use candle_core::Tensor;
use serde_json::Value;

/// The fixture `data/fixtures/{file}`.
pub fn load(file: &str) -> Value {
    let path = format!("{}/../data/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read data/fixtures/{file}: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("data/fixtures/{file} is not valid JSON: {e}"))
}

/// An array of numbers, or of arrays of them (rows), flattened in row-major order.
pub fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().expect("a number")],
    }
}

/// A shape: an array of sizes.
pub fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a shape")
        .iter()
        .map(|d| d.as_u64().expect("a size") as usize)
        .collect()
}

/// An array of numbers as an f32 tensor of shape `dims`.
pub fn tensor(v: &Value, dims: &[usize]) -> Tensor {
    let values: Vec<f32> = floats(v).into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(values, dims, &device()).expect("as many numbers as the shape holds")
}

/// An array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|i| i.as_u64().expect("an id") as u32)
        .collect()
}
