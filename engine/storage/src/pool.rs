//! A small pool of I/O threads that runs the requests of one batch at the
//! same time, so that a guest with many requests in flight (queue depth
//! above 1) gets them served concurrently rather than one after another.
//!
//! imago's file I/O is synchronous `preadv`/`pwritev` inside its futures, so
//! requests only overlap when they run on different threads: this pool is
//! what QEMU's `aio=threads` thread pool is to its block layer. The caller
//! of [`IoPool::run`] works on the batch too, and returns only when every
//! item has finished, so the items may borrow from the caller's stack (the
//! guest memory of the requests) exactly as scoped threads do, without the
//! cost of starting threads for every batch.
//!
//! Items are claimed one at a time from a shared counter, so a slow item
//! does not hold up the others and a worker that wakes late simply finds
//! nothing left to do.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// One batch: the job and the next item to claim. Lives on the stack of
/// the caller of [`IoPool::run`].
struct Batch<'a> {
    job: &'a (dyn Fn(usize) + Sync),
    count: usize,
    next: AtomicUsize,
}

impl Batch<'_> {
    /// Claims and runs items until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.count {
                return;
            }
            // A panic must not leave the pool waiting for a worker that
            // died; the job records its own results, so an item that
            // panicked is simply missing one.
            let _ = catch_unwind(AssertUnwindSafe(|| (self.job)(i)));
        }
    }
}

/// A pointer to the current [`Batch`], lifetime erased.
#[derive(Clone, Copy)]
struct BatchPtr(*const Batch<'static>);

// SAFETY: the pointer is only dereferenced by workers registered in
// `State::users`, and `IoPool::run` does not return (so the `Batch` and
// everything it borrows stay alive) until it has unpublished the batch and
// `users` has dropped to zero. `Batch` itself is `Sync` (its job is `Sync`,
// its counter atomic).
unsafe impl Send for BatchPtr {}

#[derive(Default)]
struct State {
    /// The batch being worked on, if any.
    batch: Option<BatchPtr>,
    /// Counts published batches, so a worker joins each one once.
    generation: u64,
    /// Workers currently holding the batch pointer.
    users: usize,
    /// Set when the pool is dropped.
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Workers wait here for a batch.
    work: Condvar,
    /// `run` waits here for the workers to leave the batch.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fixed set of worker threads that run batches with the caller.
pub(crate) struct IoPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    /// Starts `workers` threads named `name`. If a thread cannot be
    /// started the pool runs with fewer (with none, the caller does all
    /// the work).
    pub(crate) fn new(workers: usize, name: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let threads = (0..workers)
            .map_while(|_| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(name.to_owned())
                    .spawn(move || worker(&shared))
                    .ok()
            })
            .collect();
        Self { shared, threads }
    }

    /// Runs `job(0)` … `job(count - 1)`, on the workers and the calling
    /// thread at once; returns when all have finished.
    pub(crate) fn run(&self, count: usize, job: &(dyn Fn(usize) + Sync)) {
        let batch = Batch {
            job,
            count,
            next: AtomicUsize::new(0),
        };
        if count <= 1 || self.threads.is_empty() {
            batch.work();
            return;
        }
        {
            let mut state = self.shared.lock();
            let ptr: *const Batch<'_> = &batch;
            state.batch = Some(BatchPtr(ptr.cast()));
            state.generation = state.generation.wrapping_add(1);
        }
        // Wake no more workers than there are items for besides ours.
        if count > self.threads.len() {
            self.shared.work.notify_all();
        } else {
            for _ in 0..count - 1 {
                self.shared.work.notify_one();
            }
        }
        // Run the batch here too; even if this panicked (it cannot: `work`
        // catches panics) the batch must be unpublished before returning.
        batch.work();
        let mut state = self.shared.lock();
        state.batch = None;
        while state.users > 0 {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        match state.batch {
            Some(ptr) if state.generation != seen => {
                seen = state.generation;
                state.users += 1;
                drop(state);
                // SAFETY: registered in `users` while the batch was
                // published, so `run` waits for us before the batch goes
                // out of scope (see `BatchPtr`).
                unsafe { &*ptr.0 }.work();
                state = shared.lock();
                state.users -= 1;
                if state.users == 0 {
                    shared.done.notify_all();
                }
            }
            _ => {
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_item_runs_once_and_run_waits_for_all_of_them() {
        let pool = IoPool::new(3, "test-io");
        for count in [0, 1, 2, 3, 4, 17, 200] {
            let hits: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
            let threads = Mutex::new(std::collections::HashSet::new());
            pool.run(count, &|i| {
                // Slow items, so that workers really take part.
                std::thread::sleep(std::time::Duration::from_micros(200));
                threads.lock().unwrap().insert(std::thread::current().id());
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "batch of {count}: every item exactly once"
            );
            if count >= 17 {
                assert!(
                    threads.lock().unwrap().len() > 1,
                    "batch of {count} ran on one thread only"
                );
            }
        }
    }

    #[test]
    fn a_panicking_item_does_not_hang_the_pool_or_lose_the_others() {
        let pool = IoPool::new(2, "test-io");
        let done = AtomicU64::new(0);
        pool.run(16, &|i| {
            if i % 5 == 0 {
                panic!("item {i} fails");
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 12);
        // The pool still works afterwards.
        pool.run(8, &|_| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 20);
    }
}
