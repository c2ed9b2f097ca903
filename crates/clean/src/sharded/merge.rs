//! Step 6, one task: the output folder.

use std::path::Path;

use rustc_hash::FxHashMap;

use super::StepTimes;
use super::cluster::ClusterStats;
use super::filter::RankState;
use super::plan::{Marker, Plan, Step, require};
use super::records::{Writer, read_json};
use crate::config::Dedup;
use crate::report::{DedupReport, Report, ShardedReport};
use crate::run::{FilterState, write_report};
use crate::{Error, Result, io};
use lmforge_executor::task::marker;

/// Step 6: the output folder, as one process would have written it.
pub(super) fn merge(work: &Path, plan: &Plan) -> Result<u64> {
    let staging = crate::output::Staging::new(&plan.output)?;
    let config = &plan.config;
    let ranks = require(work, plan, Step::Filter)?;
    let mut total = FilterState::default();
    let mut outputs = Vec::new();
    let mut documents = 0;
    for dir in &ranks {
        let rank: RankState = read_json(&dir.join("state.json"))?;
        documents += rank.documents;
        total.add(rank.state);
        for mut file in rank.outputs {
            let ext = file.file.split_once('.').map_or("", |(_, e)| e).to_string();
            let name = format!("part-{:05}.{ext}", outputs.len());
            let from = dir.join(&file.file);
            let to = staging.dir().join(&name);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(io(&from))?;
            }
            file.file = name;
            outputs.push(file);
        }
    }
    if config.dedup != Dedup::None {
        let mut survivors: FxHashMap<u64, String> = FxHashMap::default();
        for dir in &ranks {
            let path = dir.join("survivors.jsonl");
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            for line in text.lines() {
                let (ordinal, id): (u64, String) =
                    serde_json::from_str(line).map_err(|e| Error::Output {
                        file: path.clone(),
                        reason: e.to_string(),
                    })?;
                survivors.insert(ordinal, id);
            }
        }
        let path = staging.dir().join("duplicates.jsonl");
        let mut w = Writer::create(path)?;
        for dir in &ranks {
            let from = dir.join("duplicates.jsonl");
            let text = std::fs::read_to_string(&from).map_err(io(&from))?;
            for line in text.lines() {
                // The line is kept as written (a float read back by serde_json need not print
                // the same); only an unknown survivor's id is filled in.
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| Error::Output {
                        file: from.clone(),
                        reason: e.to_string(),
                    })?;
                let mut line = line.to_string();
                if value["duplicate_of"].is_null() {
                    let of = value["duplicate_of_ordinal"].as_u64().unwrap_or_default();
                    let id = serde_json::Value::from(survivors.get(&of).cloned()).to_string();
                    // Quotes inside string values are escaped, so this is the key itself.
                    line = line.replacen(
                        "\"duplicate_of\":null",
                        &format!("\"duplicate_of\":{id}"),
                        1,
                    );
                }
                w.bytes((line + "\n").as_bytes())?;
            }
        }
        w.finish()?;
    }

    // The dedup counts, and the times of every step from the task markers.
    let mut dedup = DedupReport::default();
    let mut memory = 0u64;
    let mut steps = Vec::new();
    let (mut first, mut last) = (f64::MAX, 0f64);
    let mut span = |step: Step| -> Result<(f64, f64)> {
        let mut times = StepTimes {
            step: step.name().into(),
            tasks: plan.tasks(step),
            ..StepTimes::default()
        };
        let (mut a, mut b) = (f64::MAX, 0f64);
        for dir in require(work, plan, step)? {
            let m: Marker = marker(&dir)?.unwrap_or_else(|| Marker {
                step: String::new(),
                task: 0,
                plan: plan.fingerprint(),
                started: 0.0,
                seconds: 0.0,
                memory: 0,
                threads: 0,
                peak_rss: 0,
            });
            times.max_seconds = times.max_seconds.max(m.seconds);
            times.task_seconds += m.seconds;
            times.peak_rss = times.peak_rss.max(m.peak_rss);
            memory = memory.max(m.memory);
            a = a.min(m.started);
            b = b.max(m.started + m.seconds);
        }
        steps.push(times);
        first = first.min(a);
        last = last.max(b);
        Ok((a, b))
    };
    let (index_start, _) = span(Step::Signatures)?;
    span(Step::Exact)?;
    span(Step::Buckets)?;
    let (_, index_end) = span(Step::Cluster)?;
    let (filter_start, filter_end) = span(Step::Filter)?;
    if config.dedup != Dedup::None {
        // Every exact copy was read by a filter rank and counted there.
        dedup.exact_duplicates = total
            .stages
            .first()
            .and_then(|s| s.dropped.get("duplicate"))
            .copied()
            .unwrap_or(0);
    }
    if config.dedup == Dedup::Minhash {
        let dir = &require(work, plan, Step::Cluster)?[0];
        let c: ClusterStats = read_json(&dir.join("stats.json"))?;
        dedup.bands = Some(config.bands());
        dedup.indexed = c.indexed;
        dedup.clusters = c.clusters;
        dedup.candidates = c.candidates;
        dedup.verified = c.verified;
        dedup.near_duplicates = c.near_duplicates;
        dedup.cluster_seconds = c.seconds;
    }
    dedup.index_bytes = memory;
    if documents > 0 {
        dedup.index_bytes_per_document = memory as f64 / documents as f64;
    }
    let seconds = (last - first).max(0.0);
    let report = Report {
        inputs: plan.inputs.iter().map(|i| i.file.clone()).collect(),
        output: plan.output.clone(),
        config: config.clone(),
        documents_in: total.documents_in,
        bytes_in: total.bytes_in,
        file_bytes: plan.parts.iter().map(|p| p.bytes).sum(),
        documents_out: total.documents_out,
        bytes_out: total.bytes_out,
        stages: total.stages,
        languages: total.languages,
        malformed: total.malformed,
        dedup,
        outputs,
        threads: rayon::current_num_threads(),
        index_seconds: (index_end - index_start).max(0.0),
        filter_seconds: (filter_end - filter_start).max(0.0),
        seconds,
        documents_per_second: total.documents_in as f64 / seconds.max(1e-9),
        mb_per_second: total.bytes_in as f64 / 1e6 / seconds.max(1e-9),
        sharded: Some(ShardedReport {
            ranks: plan.ranks,
            parts: plan.parts.len(),
            steps,
        }),
    };
    write_report(&staging.dir().join("report.json"), &report)?;
    staging.commit()?;
    Ok(0)
}
