//! A speed-up: the batch cut in parts, differentiated side by side, one part per core.
//!
//! On a model this small, splitting each operation over the cores leaves them waiting for each
//! other between operations, a few hundred times a step. Cutting the batch instead keeps each
//! core busy with a whole forward and backward pass of its own rows. The parts' losses, each
//! weighted by its share of the rows, add up to the whole batch's mean loss, and so do their
//! gradients (up to float rounding). The cut does not depend on the number of cores, so a seed
//! gives the same run on any machine. BENCHMARKS.md has the figures.

use crate::ops::pool::on_pool;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// The parts a training step cuts its batch into (fewer when the batch has fewer rows).
pub const PARTS: usize = 2;

/// Cuts the batch (x, y), each (B, T), into at most `parts` parts of consecutive rows, as even
/// as they can be (the first ones one row longer), and runs `differentiate` on each, side by
/// side on kit's pool, with its x and y (each (rows, T)) and its share of the batch's rows.
/// Returns what each part returned, in order.
pub fn side_by_side<R, F>(x: &Tensor, y: &Tensor, parts: usize, differentiate: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(&Tensor, &Tensor, f64) -> Result<R> + Sync,
{
    let (rows, _) = x.dims2()?;
    on_pool(|| {
        cuts(rows, parts)
            .par_iter()
            .map(|&(start, len)| {
                let (x, y) = (x.narrow(0, start, len)?, y.narrow(0, start, len)?);
                differentiate(&x, &y, len as f64 / rows as f64)
            })
            .collect()
    })
}

/// The parts' gradients added up, parameter by parameter, side by side on kit's pool: what
/// nanoGPT's micro-steps accumulate in each parameter's `.grad`. (`GradStore::extend` adds the
/// same, one parameter after the other.)
pub fn accumulate(parts: Vec<GradStore>) -> Result<GradStore> {
    let mut parts = parts.into_iter();
    let Some(mut sum) = parts.next() else {
        return Ok(GradStore::default());
    };
    let rest: Vec<GradStore> = parts.collect();
    let ids: Vec<_> = sum.get_ids().copied().collect();
    let sums = on_pool(|| {
        ids.par_iter()
            .map(|&id| {
                let first = sum.get_id(id).expect("an id of this store").clone();
                let mut others = rest.iter().filter_map(|g| g.get_id(id));
                Ok((id, others.try_fold(first, |total, g| total + g)?))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    for (id, total) in sums {
        sum.insert_id(id, total);
    }
    Ok(sum)
}

/// At most `parts` runs of consecutive rows out of `rows`, as (start, length): as even as they
/// can be (the first ones one row longer), none empty.
fn cuts(rows: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, rows.max(1));
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            start += len;
            (start - len, len)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cuts_keep_every_row_in_order_in_even_parts(rows in 1usize..20, parts in 1usize..6) {
            let cuts = cuts(rows, parts);
            prop_assert_eq!(cuts.len(), parts.min(rows));
            let sizes: Vec<usize> = cuts.iter().map(|&(_, len)| len).collect();
            prop_assert!(sizes.iter().all(|&n| n >= 1));
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            let covered: Vec<usize> = cuts.iter().flat_map(|&(s, len)| s..s + len).collect();
            prop_assert_eq!(covered, (0..rows).collect::<Vec<_>>());
        }
    }
}
