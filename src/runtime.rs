//! The async runtime the binary runs on: tokio's multi-thread scheduler, with its workers
//! optionally pinned one to a core.
//!
//! Pinning is for fan-out. One event to thousands of live streams keeps every worker busy
//! for milliseconds, and Linux may wake a worker on the core of the worker that woke it,
//! leaving another core idle until its next balancing tick. On a 2-core machine both
//! workers were seen sharing one core for up to 9 ms of a fan-out while the other core sat
//! idle, which doubled that event's delivery time (docs/benchmarks.md). A worker pinned to
//! its own core cannot be stacked on another's.
//!
//! `auto` (the default) pins only when the runtime has one worker per core this process may
//! use: a dedicated machine, or a container with its own cpuset. Under a CPU quota over a
//! wider set of cores, or with more or fewer workers than cores, the kernel places them.

use std::num::NonZero;
use std::str::FromStr;

/// `EDGEDESK_PIN_WORKERS`: whether each runtime worker is bound to one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pinning {
    /// Pin when there is exactly one worker per core the process may use.
    #[default]
    Auto,
    /// Pin the workers round-robin over the cores the process may use.
    On,
    Off,
}

impl FromStr for Pinning {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is not auto, on or off")),
        }
    }
}

/// How many workers the runtime gets when not told: one per core the process may use
/// (CPU quotas and the affinity mask count).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, NonZero::get)
}

/// The cores workers are pinned to, in the order workers first park; `None` when they are
/// not pinned. `allowed` lists the cores the process may use.
pub fn plan(pinning: Pinning, workers: usize, allowed: &[usize]) -> Option<Vec<usize>> {
    match pinning {
        Pinning::Off => None,
        _ if allowed.is_empty() || workers == 0 => None,
        Pinning::Auto if workers < 2 || allowed.len() != workers => None,
        Pinning::Auto | Pinning::On => Some(allowed.to_vec()),
    }
}

/// Builds the runtime with `workers` workers, pinned as `pinning` and the machine say.
pub fn build(workers: usize, pinning: Pinning) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers.max(1)).enable_all();
    if let Some(cores) = plan(pinning, workers, &affinity::of_this_thread()) {
        tracing::info!(workers, ?cores, "runtime workers pinned, one to a core");
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Only workers park (threads of the blocking pool do not), so a thread's first park
        // is where a worker takes its core; every later park costs one thread-local read.
        builder.on_thread_park(move || affinity::pin_once(&cores, &next));
    }
    builder.build()
}

#[cfg(target_os = "linux")]
mod affinity {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;

    /// The cores the calling thread may run on; called before any pinning, the process's.
    pub fn of_this_thread() -> Vec<usize> {
        match sched_getaffinity(Pid::from_raw(0)) {
            Ok(set) => (0..CpuSet::count()).filter(|&core| set.is_set(core).unwrap_or(false)).collect(),
            Err(_) => Vec::new(),
        }
    }

    thread_local! {
        static PINNED: Cell<bool> = const { Cell::new(false) };
    }

    /// Binds the calling thread to the next of `cores`, the first time it is called on it.
    pub fn pin_once(cores: &[usize], next: &AtomicUsize) {
        if PINNED.with(|pinned| pinned.replace(true)) || cores.is_empty() {
            return;
        }
        let core = cores[next.fetch_add(1, Ordering::Relaxed) % cores.len()];
        let mut set = CpuSet::new();
        let pinned = set.set(core).and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
        if let Err(err) = pinned {
            tracing::warn!(core, error = %err, "a runtime worker could not be pinned; the kernel places it");
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    /// Pinning is implemented for Linux only; elsewhere no core is listed, so none is pinned.
    pub fn of_this_thread() -> Vec<usize> {
        Vec::new()
    }

    pub fn pin_once(_cores: &[usize], _next: &std::sync::atomic::AtomicUsize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_pins_only_one_worker_per_allowed_core() {
        assert_eq!(plan(Pinning::Auto, 2, &[0, 1]), Some(vec![0, 1]));
        assert_eq!(plan(Pinning::Auto, 4, &[2, 3, 6, 7]), Some(vec![2, 3, 6, 7]));
        // A quota of 2 over 8 cores, a single core, or more workers than cores: not pinned.
        assert_eq!(plan(Pinning::Auto, 2, &[0, 1, 2, 3, 4, 5, 6, 7]), None);
        assert_eq!(plan(Pinning::Auto, 1, &[0]), None);
        assert_eq!(plan(Pinning::Auto, 4, &[0, 1]), None);
        assert_eq!(plan(Pinning::On, 4, &[0, 1]), Some(vec![0, 1]));
        assert_eq!(plan(Pinning::Off, 2, &[0, 1]), None);
        assert_eq!(plan(Pinning::On, 2, &[]), None);
    }

    #[test]
    fn settings_parse() {
        assert_eq!("auto".parse(), Ok(Pinning::Auto));
        assert_eq!("on".parse(), Ok(Pinning::On));
        assert_eq!("off".parse(), Ok(Pinning::Off));
        assert!("yes".parse::<Pinning>().is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinned_workers_each_run_on_one_core() {
        let allowed = affinity::of_this_thread();
        assert!(!allowed.is_empty(), "the process may run somewhere");
        let workers = allowed.len().max(2);
        let runtime = build(workers, Pinning::On).expect("runtime");
        let seen = runtime.block_on(async move {
            // Idle workers park at once, and take their cores then.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let tasks: Vec<_> =
                (0..64).map(|_| tokio::spawn(async { (std::thread::current().id(), affinity::of_this_thread()) })).collect();
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.expect("task"));
            }
            seen
        });
        for (thread, cores) in &seen {
            assert_eq!(cores.len(), 1, "worker {thread:?} may run on {cores:?}");
            assert!(allowed.contains(&cores[0]), "worker {thread:?} pinned to {cores:?}, outside {allowed:?}");
        }
    }
}
