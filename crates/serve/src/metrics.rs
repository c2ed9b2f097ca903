//! `/metrics` in Prometheus' text exposition format: the scheduler's counters, gauges and
//! histograms (kept in atomics by `lmforge-infer`) and the server's own (per-status request
//! counts, prompt tokens), written out on each scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lmforge_infer::scheduler::{self, BOUNDS, Histogram};

fn write_histogram(out: &mut String, h: &Histogram, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in BOUNDS.iter().zip(h.buckets()) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {count}", h.sum_seconds());
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by route and status.
    pub requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Prompt tokens received.
    pub prompt_tokens: AtomicUsize,
    /// What the scheduler counts.
    pub engine: Arc<scheduler::Metrics>,
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
        let e = &self.engine;
        let gauges = [
            (
                "lmforge_queue_depth",
                "Requests waiting for the batch.",
                queued,
            ),
            (
                "lmforge_running_sequences",
                "Sequences in the running batch.",
                e.running.load(Ordering::Relaxed),
            ),
            (
                "lmforge_kv_blocks_used",
                "KV cache blocks held by sequences.",
                e.kv_blocks_used.load(Ordering::Relaxed),
            ),
            (
                "lmforge_kv_blocks_total",
                "KV cache blocks in the pool.",
                e.kv_blocks_total.load(Ordering::Relaxed),
            ),
            (
                "lmforge_kv_blocks_cached",
                "KV cache blocks in the prefix cache, held or idle.",
                e.kv_blocks_cached.load(Ordering::Relaxed),
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
                &e.tokens_generated,
            ),
            (
                "lmforge_prompt_tokens_total",
                "Prompt tokens received.",
                &self.prompt_tokens,
            ),
            (
                "lmforge_prefix_cache_hit_tokens_total",
                "Prompt tokens whose keys and values came from the prefix cache.",
                &e.prefix_hit_tokens,
            ),
            (
                "lmforge_prefix_cache_queried_tokens_total",
                "Prompt tokens of the requests that looked in the prefix cache.",
                &e.prefix_query_tokens,
            ),
            (
                "lmforge_generations_completed_total",
                "Generations that reached a stop or their length.",
                &e.completed,
            ),
            (
                "lmforge_generations_cancelled_total",
                "Generations ended because the client left or stopped reading.",
                &e.cancelled,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        write_histogram(
            &mut out,
            &e.ttft,
            "lmforge_time_to_first_token_seconds",
            "Queued to first token.",
        );
        write_histogram(
            &mut out,
            &e.itl,
            "lmforge_inter_token_latency_seconds",
            "Between two tokens of a request.",
        );
        write_histogram(
            &mut out,
            &e.queue_time,
            "lmforge_queue_time_seconds",
            "Waiting for a place in the batch.",
        );
        write_histogram(
            &mut out,
            &e.e2e,
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
    use std::time::Duration;

    #[test]
    fn histograms_are_cumulative_and_the_text_parses_line_by_line() {
        let m = Metrics::default();
        m.engine.ttft.observe(Duration::from_millis(3));
        m.engine.ttft.observe(Duration::from_millis(300));
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
