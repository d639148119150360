//! The native runtime's compute threads (trusted side, inside the enclave): helpers that
//! each take a fixed share of a matrix's rows, woken by a counter they spin on.
//!
//! ```text
//!  forward pass (caller's thread)             helper threads 1..T
//!   post(job: matrix, n, activations) ──epoch+1──►  spin/park until the epoch moves
//!   rows of share 0 ──────────────► out          rows of share i ──► own buffer, done+1
//!   spin until done == T−1; copy the shares ◄─────────────────────────────┘
//! ```
//!
//! Why not rayon: a forward pass runs ~210 matrix products per token, each a few tens of
//! microseconds; waking rayon's sleeping workers through the kernel costs about as much as
//! the product itself in a VM, so two threads ran slower than one. Here helpers spin for a
//! couple of milliseconds after each job (the gap between two products is microseconds)
//! and only then park, so an idle enclave does not burn its CPUs.
//!
//! Shares are fixed by the thread count and every row is computed by exactly one thread
//! with the same kernel call, so the split never changes a result bit.

use std::panic::AssertUnwindSafe;

use super::super::ModelBytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::kernels::{ActBlock, Kernel};
use super::{matmul_range, matmul_rows, scatter_rows, Matrix, ModelError};

/// How long a helper spins for the next job before parking.
const SPIN: Duration = Duration::from_millis(2);

/// One matrix product to share out.
#[derive(Debug, Clone, Copy)]
struct Job {
    matrix: Matrix,
    n: usize,
    kernel: Kernel,
}

struct Shared {
    weights: Arc<ModelBytes>,
    job: RwLock<Option<Job>>,
    acts: RwLock<Vec<ActBlock>>,
    /// Results of helper `i` (index `i - 1`), rows of its share × `n`, row-major.
    outputs: Vec<Mutex<Vec<f32>>>,
    epoch: AtomicU64,
    done: AtomicUsize,
    sleeping: Vec<AtomicBool>,
    shutdown: AtomicBool,
    failed: AtomicBool,
}

/// `threads − 1` helper threads; the caller's thread is the first worker.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    threads: usize,
}

/// The first row of share `i` of `rows` rows split `threads` ways, on a multiple of 4 so
/// that shares use the four-row kernel.
pub(crate) fn share_start(rows: usize, threads: usize, i: usize) -> usize {
    if i >= threads {
        rows
    } else {
        (rows * i / threads) / 4 * 4
    }
}

impl Pool {
    /// Starts `threads − 1` helpers over `weights`.
    pub(crate) fn start(weights: Arc<ModelBytes>, threads: usize) -> std::io::Result<Pool> {
        let helpers_wanted = threads.saturating_sub(1);
        let shared = Arc::new(Shared {
            weights,
            job: RwLock::new(None),
            acts: RwLock::new(Vec::new()),
            outputs: (0..helpers_wanted).map(|_| Mutex::new(Vec::new())).collect(),
            epoch: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            sleeping: (0..helpers_wanted).map(|_| AtomicBool::new(false)).collect(),
            shutdown: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let mut pool = Pool { shared: Arc::clone(&shared), helpers: Vec::new(), threads: threads.max(1) };
        for i in 1..=helpers_wanted {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("vouch-compute-{i}"))
                .spawn(move || helper(&shared, i, threads))?;
            pool.helpers.push(handle);
        }
        Ok(pool)
    }

    /// Computes `out[t][r] = W[r] · acts[t]` for all rows, sharing the rows out.
    pub(crate) fn matmul(
        &self,
        kernel: Kernel,
        w: &Matrix,
        acts: &[ActBlock],
        n: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let s = &*self.shared;
        {
            let mut shared_acts = s.acts.write().unwrap_or_else(PoisonError::into_inner);
            shared_acts.clear();
            shared_acts.extend_from_slice(acts);
        }
        *s.job.write().unwrap_or_else(PoisonError::into_inner) = Some(Job { matrix: *w, n, kernel });
        s.done.store(0, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for (flag, handle) in s.sleeping.iter().zip(&self.helpers) {
            if flag.load(Ordering::SeqCst) {
                handle.thread().unpark();
            }
        }

        // Share 0, on this thread.
        matmul_range(kernel, &s.weights, w, acts, n, 0..share_start(w.rows, self.threads, 1), out, scratch);

        let helpers = self.helpers.len();
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < helpers {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if s.failed.swap(false, Ordering::SeqCst) {
            return Err(ModelError::inference("a compute thread failed"));
        }
        for (i, output) in s.outputs.iter().enumerate() {
            let first = share_start(w.rows, self.threads, i + 1);
            let values = output.lock().unwrap_or_else(PoisonError::into_inner);
            scatter_rows(&values, n, first, w.rows, out);
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for handle in self.helpers.drain(..) {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

/// Helper `index` (1-based): wait for a job, compute its share, report, repeat.
fn helper(s: &Shared, index: usize, threads: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for the epoch to move: spin, then park (with the flag the poster checks).
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || started.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            s.sleeping[index - 1].store(true, Ordering::SeqCst);
            if s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                std::thread::park();
            }
            s.sleeping[index - 1].store(false, Ordering::SeqCst);
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = *s.job.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(Job { matrix, n, kernel }) = job {
            let first = share_start(matrix.rows, threads, index);
            let end = share_start(matrix.rows, threads, index + 1);
            // A panic here must not leave the poster spinning: it is reported instead.
            let computed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let acts = s.acts.read().unwrap_or_else(PoisonError::into_inner);
                let mut output = s.outputs[index - 1].lock().unwrap_or_else(PoisonError::into_inner);
                output.resize((end - first) * n, 0.0);
                matmul_rows(kernel, &s.weights, &matrix, &acts, n, first, &mut output);
            }));
            if computed.is_err() {
                s.failed.store(true, Ordering::SeqCst);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::share_start;

    #[test]
    fn shares_cover_every_row_once_in_fours() {
        for rows in [4usize, 64, 192, 576, 1536, 49_152, 100, 7] {
            for threads in 1..=8 {
                let bounds: Vec<usize> = (0..=threads).map(|i| share_start(rows, threads, i)).collect();
                assert_eq!((bounds[0], bounds[threads]), (0, rows), "{rows} rows, {threads} threads");
                for w in bounds.windows(2) {
                    assert!(w[0] <= w[1]);
                }
                for &b in &bounds[..threads] {
                    assert_eq!(b % 4, 0, "{rows} rows, {threads} threads: {bounds:?}");
                }
            }
        }
    }
}
