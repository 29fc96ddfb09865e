//! A histogram of durations with one atomic add per bucket hit and no lock.
//!
//! `prometheus_client`'s [`Histogram`](prometheus_client::metrics::histogram::Histogram) takes a
//! mutex for every observation. Per-phase timing observes several times per proxied request,
//! from every worker thread at once; an atomic add on the bucket and one on the sum cost less
//! and never wait. A scrape may read a sum that is one observation ahead of its buckets, which
//! Prometheus tolerates (its rate() of both is what dashboards use).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Fixed-bucket histogram of durations, in seconds on the wire. Clones share the counts (as a
/// [`Family`](prometheus_client::metrics::family::Family) needs).
#[derive(Clone)]
pub(crate) struct DurationHistogram {
    inner: Arc<Inner>,
}

struct Inner {
    /// Upper bounds (inclusive) in nanoseconds, ascending; a last, unbounded bucket follows.
    bounds_ns: &'static [u64],
    /// One count per bound, then the overflow bucket (+Inf).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    /// A histogram with the upper bounds `bounds_ns` (nanoseconds, ascending) and +Inf.
    pub(crate) fn new(bounds_ns: &'static [u64]) -> Self {
        debug_assert!(bounds_ns.windows(2).all(|w| w[0] < w[1]));
        Self {
            inner: Arc::new(Inner {
                bounds_ns,
                counts: (0..=bounds_ns.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one duration.
    pub(crate) fn observe(&self, d: Duration) {
        // 2^64 ns is 584 years: saturating is exact for anything a request can take.
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are "less than or equal": the first bound not below the value.
        let h = &*self.inner;
        let i = h.bounds_ns.partition_point(|b| *b < ns);
        if let Some(c) = h.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// `(upper bound in seconds, count in that bucket alone)`, +Inf last, and the total count.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64) {
        let h = &*self.inner;
        let mut total = 0;
        let buckets = h
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                total += n;
                let bound = h
                    .bounds_ns
                    .get(i)
                    .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
                (bound, n)
            })
            .collect();
        (buckets, total)
    }
}

impl std::fmt::Debug for DurationHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurationHistogram")
            .field("buckets", &self.inner.bounds_ns.len())
            .finish_non_exhaustive()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.snapshot();
        let sum = self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::{Registry, Unit};

    const BOUNDS: &[u64] = &[1_000, 10_000, 100_000];

    fn text(h: DurationHistogram) -> String {
        let mut r = Registry::default();
        r.register_with_unit("t", "test", Unit::Seconds, h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_every_bucket_is_cumulative_on_the_wire() {
        let h = DurationHistogram::new(BOUNDS);
        for ns in [0, 1_000, 1_001, 10_000, 99_999, 100_001, 5_000_000_000] {
            h.observe(Duration::from_nanos(ns));
        }
        let out = text(h);
        for line in [
            "t_seconds_count 7",
            "t_seconds_bucket{le=\"0.000001\"} 2",
            "t_seconds_bucket{le=\"0.00001\"} 4",
            "t_seconds_bucket{le=\"0.0001\"} 5",
            "t_seconds_bucket{le=\"+Inf\"} 7",
            "# TYPE t_seconds histogram",
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("t_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((sum - 5.000212001).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn an_empty_histogram_still_lists_its_buckets() {
        let out = text(DurationHistogram::new(BOUNDS));
        assert!(out.contains("t_seconds_count 0"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 0"), "{out}");
    }

    #[test]
    fn observations_from_many_threads_are_all_counted() {
        let h = DurationHistogram::new(BOUNDS);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        h.observe(Duration::from_micros(5));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (buckets, count) = h.snapshot();
        assert_eq!(count, 40_000);
        assert_eq!(buckets[1].1, 40_000);
    }
}
