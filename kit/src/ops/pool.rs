//! The thread pool the fused ops split their work over.

use std::sync::OnceLock;

/// The threads the fused dense and attention ops split their work over: `MINIGPT_THREADS`, else
/// every core. candle's own kernels stay on one thread (see `.cargo/config.toml`): on tensors
/// this small they spend longer synchronising than computing, while these ops split whole
/// matrix products, a few per call.
#[inline]
pub fn threads() -> usize {
    pool().current_num_threads()
}

/// Rows per block when `rows` rows are split over the threads.
#[inline]
pub(super) fn row_block(rows: usize) -> usize {
    rows.div_ceil(threads()).max(1)
}

#[inline]
pub(super) fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("MINIGPT_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("kit-ops-{i}"))
            .build()
            .expect("a thread pool")
    })
}

/// Runs `work` on kit's thread pool and returns its result.
///
/// The fused ops split their products over that pool. Called from any other thread, each op
/// hands its work over to the pool and sleeps until it is done: a few hundred round trips
/// through the kernel per training step. Called from inside `work`, they start right away on
/// the pool's own thread. The training loop runs each step and each evaluation this way, and a
/// generation loop should too: a step of one position is a few dozen small ops.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    pool().install(work)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn the_pool_runs_work_on_its_own_threads() {
        let names: Vec<String> = pool().install(|| {
            (0..4)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    std::thread::current().name().unwrap_or("?").to_string()
                })
                .collect()
        });
        println!("{} threads: {names:?}", threads());
        assert!(names.iter().all(|n| n.starts_with("kit-ops-")), "{names:?}");
    }
}
