//! `/metrics` in Prometheus' text exposition format: counters, gauges and histograms kept in
//! atomics (and one mutex for the per-status request counts), written out on each scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Bucket bounds of the latency histograms, seconds.
const BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            if s <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by route and status.
    pub requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Sequences in the running batch.
    pub running: AtomicUsize,
    /// Blocks of the KV pool held by sequences.
    pub kv_blocks_used: AtomicUsize,
    /// Blocks in the KV pool.
    pub kv_blocks_total: AtomicUsize,
    /// Tokens generated.
    pub tokens_generated: AtomicUsize,
    /// Prompt tokens received.
    pub prompt_tokens: AtomicUsize,
    /// Generations that ran to a stop or length.
    pub completed: AtomicUsize,
    /// Generations ended because the client left or stopped reading.
    pub cancelled: AtomicUsize,
    /// Request queued → first token.
    pub ttft: Histogram,
    /// Between two tokens of one request.
    pub itl: Histogram,
    /// Request queued → admitted.
    pub queue_time: Histogram,
    /// Request queued → finished.
    pub e2e: Histogram,
}

impl Metrics {
    /// Counts a response.
    pub fn count_response(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route.to_string(), status)).or_default() += 1;
    }

    /// The exposition text; `queued` is the scheduler's queue depth.
    pub fn render(&self, queued: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP lmforge_requests_total HTTP responses by route and status.\n# TYPE lmforge_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "lmforge_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let gauges = [
            (
                "lmforge_queue_depth",
                "Requests waiting for the batch.",
                queued,
            ),
            (
                "lmforge_running_sequences",
                "Sequences in the running batch.",
                self.running.load(Ordering::Relaxed),
            ),
            (
                "lmforge_kv_blocks_used",
                "KV cache blocks held by sequences.",
                self.kv_blocks_used.load(Ordering::Relaxed),
            ),
            (
                "lmforge_kv_blocks_total",
                "KV cache blocks in the pool.",
                self.kv_blocks_total.load(Ordering::Relaxed),
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory of the server.",
                resident_bytes(),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "lmforge_generated_tokens_total",
                "Tokens generated.",
                &self.tokens_generated,
            ),
            (
                "lmforge_prompt_tokens_total",
                "Prompt tokens received.",
                &self.prompt_tokens,
            ),
            (
                "lmforge_generations_completed_total",
                "Generations that reached a stop or their length.",
                &self.completed,
            ),
            (
                "lmforge_generations_cancelled_total",
                "Generations ended because the client left or stopped reading.",
                &self.cancelled,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.ttft.write(
            &mut out,
            "lmforge_time_to_first_token_seconds",
            "Queued to first token.",
        );
        self.itl.write(
            &mut out,
            "lmforge_inter_token_latency_seconds",
            "Between two tokens of a request.",
        );
        self.queue_time.write(
            &mut out,
            "lmforge_queue_time_seconds",
            "Waiting for a place in the batch.",
        );
        self.e2e.write(
            &mut out,
            "lmforge_request_duration_seconds",
            "Queued to finished.",
        );
        out
    }
}

/// Resident set size from `/proc/self/statm` (0 where there is none).
fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_the_text_parses_line_by_line() {
        let m = Metrics::default();
        m.ttft.observe(Duration::from_millis(3));
        m.ttft.observe(Duration::from_millis(300));
        m.count_response("/api", 200);
        let text = m.render(2);
        assert!(text.contains("lmforge_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("lmforge_time_to_first_token_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("lmforge_time_to_first_token_seconds_count 2"));
        assert!(text.contains("lmforge_requests_total{route=\"/api\",status=\"200\"} 1"));
        assert!(text.contains("lmforge_queue_depth 2"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
