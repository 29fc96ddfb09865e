//! The QPS API client's share of the gateway's Prometheus metrics: registered by the gateway's
//! registry, recorded here, so the Qlik client needs nothing from the gateway to count its calls.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallErrorLabels {
    call: &'static str,
    code: &'static str,
}

/// QPS API call durations and errors (cheap to clone: handles to the same series).
#[derive(Clone)]
pub struct QpsMetrics {
    duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    errors: Family<CallErrorLabels, Counter>,
}

impl QpsMetrics {
    /// Registers the series in `registry`, with histograms made by `histogram`.
    pub fn register(registry: &mut Registry, histogram: fn() -> Histogram) -> Self {
        let duration = Family::new_with_constructor(histogram);
        registry.register_with_unit(
            "qlik_gateway_qps_request_duration",
            "Duration of QPS API calls (mutual TLS, port 4243), by call",
            Unit::Seconds,
            duration.clone(),
        );
        let errors = Family::<CallErrorLabels, Counter>::default();
        registry.register(
            "qlik_gateway_qps_errors",
            "Failed QPS API calls, by call and error code",
            errors.clone(),
        );
        Self { duration, errors }
    }

    /// Records one QPS API call named `call`, how long it took and its error code if it failed.
    pub fn observe(&self, call: &'static str, took: Duration, error: Option<&'static str>) {
        self.duration
            .get_or_create(&CallLabels { call })
            .observe(took.as_secs_f64());
        if let Some(code) = error {
            self.errors
                .get_or_create(&CallErrorLabels { call, code })
                .inc();
        }
    }
}
