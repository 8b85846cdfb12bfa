//! The last ten minutes of grants and wait times, sampled every
//! [`INTERVAL`] on a thread of its own, for the status page's chart.

use super::Observe;
use crate::metrics::{LockKind, Outcome, Snapshot};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Samples kept: ten minutes.
const KEPT: usize = 301;

#[derive(Clone, Copy)]
struct Sample {
    unix_ms: u64,
    grants: u64,
    waits: Snapshot,
}

/// The samples, and a way to wake the sampler to stop.
#[derive(Default)]
pub(super) struct History {
    samples: Mutex<VecDeque<Sample>>,
    wake: (Mutex<()>, Condvar),
}

impl History {
    /// Samples until `stopping` is set (and [`History::wake`] called).
    pub(super) fn run(&self, source: &dyn Observe, stopping: &AtomicBool) {
        let mut guard = self.wake.0.lock();
        while !stopping.load(Ordering::SeqCst) {
            self.sample(source);
            self.wake.1.wait_for(&mut guard, INTERVAL);
        }
    }

    pub(super) fn wake(&self) {
        let _guard = self.wake.0.lock();
        self.wake.1.notify_all();
    }

    fn sample(&self, source: &dyn Observe) {
        let parts = source.parts();
        let metrics = parts.metrics;
        let grants = LockKind::ALL.iter().map(|k| metrics.grants(*k)).sum();
        let mut waits = Snapshot::default();
        for kind in LockKind::ALL {
            for outcome in Outcome::ALL {
                let s = metrics.overall().wait(kind, outcome).snapshot();
                for (total, n) in waits.buckets.iter_mut().zip(s.buckets) {
                    *total += n;
                }
                waits.count += s.count;
                waits.sum_us += s.sum_us;
            }
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut samples = self.samples.lock();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample {
            unix_ms,
            grants,
            waits,
        });
    }

    /// `{"interval_ms":2000,"points":[{"t":UNIX_MS,"grants_per_s":X,
    /// "waits":N,"p50":S,"p90":S,"p99":S}]}`, one point per interval
    /// (percentiles in seconds, `null` when nothing waited).
    pub(super) fn render(&self) -> String {
        let samples: Vec<Sample> = self.samples.lock().iter().copied().collect();
        let mut out = format!("{{\"interval_ms\":{},\"points\":[", INTERVAL.as_millis());
        for (i, pair) in samples.windows(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            let seconds = (b.unix_ms.saturating_sub(a.unix_ms)).max(1) as f64 / 1000.0;
            let waits = b.waits.since(&a.waits);
            let rate = b.grants.saturating_sub(a.grants) as f64 / seconds;
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"t\":{},\"grants_per_s\":{rate:.3},\"waits\":{}",
                b.unix_ms, waits.count
            );
            for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
                match waits.quantile(q) {
                    Some(v) => {
                        let _ = write!(out, ",\"{key}\":{v:.6}");
                    }
                    None => {
                        let _ = write!(out, ",\"{key}\":null");
                    }
                }
            }
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}
