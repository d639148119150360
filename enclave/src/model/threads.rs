//! Compute-thread configuration (trusted side, inside the enclave).
//!
//! The native runtime starts its own pool of this many threads per model (see
//! `native::pool`). candle 0.11.1 (the reference runtimes) runs its CPU kernels on
//! process-global pools (a barrier pool for the quantized matmuls and a rayon pool),
//! both sized once, on first use, from the
//! `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` environment variables. There is no API to
//! hand candle a pool of our own, so the thread count is a process-wide setting: call
//! [`init_compute_threads`] early in `main`, before any model is loaded and before other
//! threads are started (it sets those environment variables). [`super::Model::load`] calls
//! it with `None` so that the count is fixed, and known, before candle first runs.

use std::sync::OnceLock;

static COMPUTE_THREADS: OnceLock<usize> = OnceLock::new();

fn from_env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n > 0)
}

/// Fixes candle's compute thread count for this process and returns it.
///
/// The first call wins: `requested` if given, else `CANDLE_NUM_THREADS`, else
/// `RAYON_NUM_THREADS`, else the number of CPUs available. Later calls return the count
/// already in force (check the result if you asked for a specific number).
pub fn init_compute_threads(requested: Option<usize>) -> usize {
    *COMPUTE_THREADS.get_or_init(|| {
        let n = requested
            .filter(|n| *n > 0)
            .or_else(|| from_env("CANDLE_NUM_THREADS"))
            .or_else(|| from_env("RAYON_NUM_THREADS"))
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        // Both variables: candle's barrier pool reads CANDLE_NUM_THREADS (falling back to
        // RAYON_NUM_THREADS), its rayon pool and the gemm kernels read RAYON_NUM_THREADS.
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        n
    })
}

/// The compute thread count in force, fixing it from the environment if not yet set.
pub fn compute_threads() -> usize {
    init_compute_threads(None)
}
