//! Step 1, per rank: exact keys, MinHash signatures and band keys.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::exact::exact_task;
use super::plan::{Counts, Plan, Step, no_progress};
use super::records::{Writer, write_json};
use crate::config::Dedup;
use crate::lsh::{bucket, used_bands};
use crate::run::{Item, Pass, Reading};
use crate::{Cleaner, Error, Result};

/// Step 1 of rank `rank`: exact keys by exact task, signatures, band keys.
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
    let mut exact: Vec<Writer> = Vec::new();
    if dedup {
        for t in 0..exact_tasks {
            exact.push(Writer::create(out.join(format!("exact-{t:05}.bin")))?);
        }
    }
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
                exact[exact_task(key, exact_tasks)].put(&[key, local])?;
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
    let memory = keys.iter().map(|k| k.capacity() * 8).sum::<usize>() as u64;
    for w in exact {
        w.finish()?;
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
