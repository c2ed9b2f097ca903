//! Step 1, per rank: exact keys, MinHash signatures and band keys.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::exact::exact_task;
use super::plan::{Counts, Plan, Step, no_progress};
use super::records::{Writer, write_index, write_json};
use crate::config::Dedup;
use crate::lsh::{bucket, used_bands};
use crate::run::{Item, Pass, Reading};
use crate::{Cleaner, Error, Result};

/// Step 1 of rank `rank`: exact keys grouped by exact task (`exact.bin`, indexed by
/// `exact.idx`), signatures, band keys.
pub(super) fn signatures(
    plan: &Plan,
    cleaner: &Cleaner,
    rank: usize,
    out: &Path,
    cancel: &AtomicBool,
) -> Result<u64> {
    let range = plan.rank_parts(rank);
    let parts = &plan.parts[range];
    for input in &plan.inputs {
        if parts.iter().any(|p| p.file == input.file)
            && let Some(why) = input.changed()?
        {
            return Err(Error::InputChanged(why));
        }
    }
    let config = &plan.config;
    let near = config.dedup == Dedup::Minhash;
    let dedup = config.dedup != Dedup::None;
    let perms = config.minhash.perms;
    let (bands, rows) = used_bands(cleaner.bands(), perms);
    let exact_tasks = plan.tasks(Step::Exact);
    // (exact task, key, local ordinal): one file sorted by task with an index, not a file
    // per task, so that a rank's open files and buffers do not grow with the task count.
    let mut exact: Vec<(u32, u64, u64)> = Vec::new();
    let mut signatures = if near {
        Some(Writer::create(out.join("signatures.bin"))?)
    } else {
        None
    };
    let mut keys: Vec<Vec<u64>> = vec![Vec::new(); if near { bands } else { 0 }];
    let mut counts = Counts {
        parts: vec![(0, 0); parts.len()],
        documents: 0,
    };
    let text_key = [config.text_field.clone()];
    let reading = Reading {
        parts,
        lines: None,
        keys: &text_key,
        optional: &[],
        cancel,
        pass: Pass::Dedup,
        file_bytes: parts.iter().map(|p| p.bytes).sum(),
        progress: &no_progress,
    };
    let zero = vec![0u8; perms * 4];
    let mut record = Vec::with_capacity(perms * 4);
    reading.each_batch(|batch| {
        let docs = batch
            .items
            .iter()
            .filter(|i| matches!(i, Item::Doc(_)))
            .count() as u64;
        counts.parts[batch.part].0 += docs;
        if let Some(lines) = batch.lines {
            counts.parts[batch.part].1 = lines;
        }
        if dedup {
            for (key, signature) in cleaner.hash_batch(&batch.items).into_iter().flatten() {
                let local = counts.documents;
                counts.documents += 1;
                exact.push((exact_task(key, exact_tasks) as u32, key, local));
                let Some(w) = signatures.as_mut() else {
                    continue;
                };
                match signature {
                    None => w.bytes(&zero)?,
                    Some(signature) => {
                        let local = u32::try_from(local).map_err(|_| {
                            Error::Config(
                                "a rank holds at most 4,294,967,295 documents; use more ranks"
                                    .into(),
                            )
                        })?;
                        record.clear();
                        for v in &signature {
                            record.extend_from_slice(&v.to_le_bytes());
                        }
                        w.bytes(&record)?;
                        for (band, keys) in keys.iter_mut().enumerate() {
                            let b = bucket(&signature, band, rows);
                            keys.push((u64::from(b) << 32) | u64::from(local));
                        }
                    }
                }
            }
        } else {
            counts.documents += docs;
        }
        Ok(counts.documents)
    })?;
    let memory = (keys.iter().map(|k| k.capacity() * 8).sum::<usize>()
        + exact.capacity() * std::mem::size_of::<(u32, u64, u64)>()) as u64;
    if dedup {
        // Within a task, local ordinals ascend: the exact step keeps the first copy it reads.
        exact.sort_unstable_by_key(|&(task, _, local)| (task, local));
        let mut w = Writer::create(out.join("exact.bin"))?;
        let mut offsets = Vec::with_capacity(exact_tasks + 1);
        for (at, &(task, key, local)) in exact.iter().enumerate() {
            while offsets.len() <= task as usize {
                offsets.push(at as u64);
            }
            w.put(&[key, local])?;
        }
        offsets.resize(exact_tasks + 1, exact.len() as u64);
        w.finish()?;
        write_index(out.join("exact.idx"), &offsets)?;
    }
    if let Some(w) = signatures {
        w.finish()?;
    }
    for (band, mut keys) in keys.into_iter().enumerate() {
        keys.sort_unstable();
        let mut w = Writer::create(out.join(format!("band-{band:03}.bin")))?;
        w.put(&keys)?;
        w.finish()?;
    }
    write_json(&out.join("counts.json"), &counts)?;
    Ok(memory)
}
