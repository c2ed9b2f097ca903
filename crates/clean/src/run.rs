//! A run: the dedup pass (exact keys, signatures, clustering), then the filter pass (every
//! other stage, the writes), each reading the input once on its own thread while rayon works
//! on batches of documents; results are applied in input order, so the output does not depend
//! on the thread count.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Instant;

use lmforge_corpus::{Part, Reader, Record};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use whatlang::Lang;

use crate::blacklist::List;
use crate::config::{Config, Dedup};
use crate::language::{Detected, Identifier};
use crate::lsh::Index;
use crate::minhash::{Bands, MinHasher, Scratch};
use crate::output::{Document, OutputFile, ShardWriter, Staging};
use crate::report::{DedupReport, LanguageReport, Malformed, Report, Stage, StageReport};
use crate::{Error, Result, io};

/// Documents per batch handed to the thread pool (or fewer, at [`BATCH_BYTES`]).
const BATCH_DOCS: usize = 1024;
const BATCH_BYTES: usize = 8 << 20;
/// Malformed-input messages kept in the report.
const EXAMPLES: usize = 20;

/// Which pass a [`Progress`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Reading for dedup (exact keys and MinHash signatures).
    Dedup,
    /// Reading again to filter and write.
    Filter,
}

/// Sent after every batch.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The pass.
    pub pass: Pass,
    /// Input bytes (as stored) read so far in this pass.
    pub bytes: u64,
    /// Input bytes in all.
    pub total_bytes: u64,
    /// Documents read so far in this pass.
    pub documents: u64,
}

/// What stages 3-6 did with one document.
#[derive(Clone, Debug, PartialEq)]
pub struct Filtered {
    /// Detected language, when the language stage ran and found one.
    pub language: Option<Detected>,
    /// Bytes after cleaning, when the document got that far.
    pub cleaned_bytes: Option<usize>,
    /// Kept (with its cleaned text) or dropped.
    pub outcome: Outcome,
}

/// Kept or dropped.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The text to write.
    Kept(String),
    /// Where and why.
    Dropped {
        /// The stage.
        stage: Stage,
        /// The reason, as the report counts it.
        reason: String,
    },
}

/// A cleaning run's stages, built once from a [`Config`].
pub struct Cleaner {
    config: Config,
    bands: Bands,
    minhasher: MinHasher,
    identifier: Option<Identifier>,
    keep_languages: Vec<Lang>,
    lists: Vec<List>,
}

/// A dropped duplicate: its survivor's ordinal, how it was found, the similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Dup {
    pub(crate) of: u64,
    pub(crate) near: bool,
    pub(crate) similarity: f32,
}

pub(crate) enum Item {
    Doc(Record),
    Bad(lmforge_corpus::Error),
}

pub(crate) struct Batch {
    pub(crate) items: Vec<Item>,
    pub(crate) bytes_read: u64,
    /// The part it comes from (its index in the parts read).
    pub(crate) part: usize,
    /// On a part's last batch: the lines the part held.
    pub(crate) lines: Option<u64>,
}

impl Cleaner {
    /// Validates `config` and loads what the stages need (blacklists, permutations).
    pub fn new(config: Config) -> Result<Cleaner> {
        config.validate()?;
        let mut keep_languages = Vec::new();
        let mut short_codes = Vec::new();
        if let Some(l) = &config.language {
            for code in &l.languages {
                let lang = crate::language::parse(code)?;
                keep_languages.push(lang);
                short_codes.push(crate::language::code(lang).to_string());
            }
        }
        let lists = crate::blacklist::load_all(&config.blacklists, &short_codes)?;
        Ok(Cleaner {
            bands: config.bands(),
            minhasher: MinHasher::new(config.minhash.perms, config.minhash.ngram, config.seed),
            identifier: config
                .language
                .as_ref()
                .map(|l| Identifier::new(l.sample_bytes)),
            keep_languages,
            lists,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The banding near dedup uses.
    pub fn bands(&self) -> Bands {
        self.bands
    }

    /// The blacklists loaded (file, language, terms), for `--explain`.
    pub fn blacklists(&self) -> Vec<(PathBuf, Option<String>, usize)> {
        self.lists
            .iter()
            .map(|l| (l.file.clone(), l.language.clone(), l.len()))
            .collect()
    }

    /// Stages 3-6 (language, cleaning and length, blacklist, quality) on one document.
    pub fn filter(&self, text: &str) -> Filtered {
        let mut out = Filtered {
            language: None,
            cleaned_bytes: None,
            outcome: Outcome::Kept(String::new()),
        };
        let drop = |stage: Stage, reason: &str| Outcome::Dropped {
            stage,
            reason: reason.to_string(),
        };
        if let (Some(identifier), Some(params)) = (&self.identifier, &self.config.language) {
            out.language = identifier.detect(text);
            if !self.keep_languages.is_empty() {
                let reason = match out.language {
                    None => Some("undetected"),
                    Some(d) if !self.keep_languages.contains(&d.lang) => Some("other_language"),
                    Some(d) if d.confidence < params.threshold => Some("low_confidence"),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    out.outcome = drop(Stage::Language, reason);
                    return out;
                }
            }
        }
        let cleaned = if self.config.cleaning {
            crate::text::clean_text(text)
        } else {
            text.to_string()
        };
        out.cleaned_bytes = Some(cleaned.len());
        let chars = cleaned.chars().count();
        if chars < self.config.min_chars {
            out.outcome = drop(Stage::Cleaning, "too_short");
            return out;
        }
        if self.config.max_chars.is_some_and(|max| chars > max) {
            out.outcome = drop(Stage::Cleaning, "too_long");
            return out;
        }
        if !self.lists.is_empty() {
            let language = out.language.map(|d| crate::language::code(d.lang));
            let lower = cleaned.to_lowercase();
            let mut found = 0;
            for list in &self.lists {
                let applies = match (&list.language, language, &self.identifier) {
                    (None, _, _) | (_, _, None) => true,
                    (Some(l), Some(doc), _) => l == doc,
                    (Some(_), None, _) => false,
                };
                if applies {
                    found += list
                        .distinct_matches(&lower, self.config.max_blacklisted - found)
                        .len();
                    if found >= self.config.max_blacklisted {
                        out.outcome = drop(Stage::Blacklist, "blacklisted");
                        return out;
                    }
                }
            }
        }
        if let Some(gopher) = &self.config.quality
            && let Some(reason) = gopher.check(&cleaned)
        {
            out.outcome = drop(Stage::Quality, reason);
            return out;
        }
        out.outcome = Outcome::Kept(cleaned);
        out
    }

    /// Cleans the corpus in `files` into `output` (see the crate docs for what is written).
    /// `progress` is called after every batch; setting `cancel` stops the run at the next
    /// batch with [`Error::Interrupted`], leaving nothing at `output` changed.
    pub fn run(
        &self,
        files: &[PathBuf],
        output: &Path,
        progress: &(dyn Fn(&Progress) + Sync),
        cancel: &AtomicBool,
    ) -> Result<Report> {
        let start = Instant::now();
        let staging = Staging::new(output)?;
        let parts = lmforge_corpus::split(files, self.config.part_bytes)?;
        let file_bytes: u64 = parts.iter().map(|p| p.bytes).sum();
        let mut dedup = DedupReport::default();
        let mut dups: FxHashMap<u64, Dup> = FxHashMap::default();
        let mut indexed_documents = None;
        if self.config.dedup != Dedup::None {
            indexed_documents =
                Some(self.dedup_pass(&parts, file_bytes, progress, cancel, &mut dups, &mut dedup)?);
        }
        let index_seconds = start.elapsed().as_secs_f64();

        let filter_start = Instant::now();
        let roots: FxHashSet<u64> = dups.values().map(|d| d.of).collect();
        let mut filtering = Filtering::new(self, staging.dir(), &dups, roots, 0)?;
        let reading = Reading {
            parts: &parts,
            lines: None,
            keys: &filtering.keys(),
            optional: &filtering.optional(),
            cancel,
            pass: Pass::Filter,
            file_bytes,
            progress,
        };
        reading.each_batch(|batch| filtering.batch(batch))?;
        let filtered = filtering.finish()?;
        if let Some(n) = indexed_documents
            && n != filtered.documents
        {
            return Err(Error::InputChanged(format!(
                "the dedup pass read {n} documents and the filter pass {}: \
                 an input file changed during the run",
                filtered.documents
            )));
        }
        let seconds = start.elapsed().as_secs_f64();
        if filtered.documents > 0 {
            dedup.index_bytes_per_document = dedup.index_bytes as f64 / filtered.documents as f64;
        }
        let state = filtered.state;
        let report = Report {
            inputs: files.to_vec(),
            output: output.to_path_buf(),
            config: self.config.clone(),
            documents_in: state.documents_in,
            bytes_in: state.bytes_in,
            file_bytes,
            documents_out: state.documents_out,
            bytes_out: state.bytes_out,
            stages: state.stages,
            languages: state.languages,
            malformed: state.malformed,
            dedup,
            outputs: filtered.outputs,
            threads: rayon::current_num_threads(),
            index_seconds,
            filter_seconds: filter_start.elapsed().as_secs_f64(),
            seconds,
            documents_per_second: state.documents_in as f64 / seconds.max(1e-9),
            mb_per_second: state.bytes_in as f64 / 1e6 / seconds.max(1e-9),
            sharded: None,
        };
        write_report(&staging.dir().join("report.json"), &report)?;
        staging.commit()?;
        Ok(report)
    }

    /// Per document of a batch (in parallel): the exact key and, for near dedup, the MinHash
    /// signature (`None` for a text too short for one shingle); `None` for a bad record.
    pub(crate) fn hash_batch(&self, items: &[Item]) -> Vec<Option<(u64, Option<Vec<u32>>)>> {
        let near = self.config.dedup == Dedup::Minhash;
        let perms = self.minhasher.perms();
        items
            .par_iter()
            .map_init(Scratch::default, |scratch, item| match item {
                Item::Doc(r) => {
                    let text = &r.fields[0];
                    let signature = near.then(|| {
                        let mut signature = vec![0u32; perms];
                        self.minhasher
                            .signature_into(text, scratch, &mut signature)
                            .then_some(signature)
                    });
                    Some((crate::text::exact_key(text), signature.flatten()))
                }
                Item::Bad(_) => None,
            })
            .collect()
    }

    /// Pass 1: exact keys (first copy wins) and, for near dedup, signatures of the documents
    /// that are not exact copies, then clustering. Returns the documents read.
    fn dedup_pass(
        &self,
        parts: &[Part],
        file_bytes: u64,
        progress: &(dyn Fn(&Progress) + Sync),
        cancel: &AtomicBool,
        dups: &mut FxHashMap<u64, Dup>,
        report: &mut DedupReport,
    ) -> Result<u64> {
        let near = self.config.dedup == Dedup::Minhash;
        let perms = self.minhasher.perms();
        let mut exact: FxHashMap<u64, u32> = FxHashMap::default();
        let mut index = Index::new(perms);
        let mut ordinal: u64 = 0;
        let keys = [self.config.text_field.clone()];
        let reading = Reading {
            parts,
            lines: None,
            keys: &keys,
            optional: &[],
            cancel,
            pass: Pass::Dedup,
            file_bytes,
            progress,
        };
        reading.each_batch(|batch| {
            for (key, signature) in self.hash_batch(&batch.items).into_iter().flatten() {
                let o = u32::try_from(ordinal)
                    .ok()
                    .filter(|&o| o < u32::MAX)
                    .ok_or_else(|| {
                        Error::Config(
                            "one process indexes at most 4,294,967,294 documents; \
                             run it sharded (--ranks N)"
                                .into(),
                        )
                    })?;
                ordinal += 1;
                match exact.entry(key) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        dups.insert(
                            o.into(),
                            Dup {
                                of: (*first.get()).into(),
                                near: false,
                                similarity: 1.0,
                            },
                        );
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(o);
                        if let Some(signature) = signature {
                            index.push(o, &signature);
                        }
                    }
                }
            }
            Ok(ordinal)
        })?;
        report.exact_duplicates = dups.len() as u64;
        report.indexed = index.len() as u64;
        // hashbrown: a (u64, u32) slot is 16 bytes with its padding, plus one control byte.
        let exact_bytes = exact.capacity() * 17;
        drop(exact);
        if near {
            let started = Instant::now();
            let clusters = index.clusters(self.bands, self.config.minhash.threshold);
            report.bands = Some(self.bands);
            report.clusters = clusters.clusters;
            report.candidates = clusters.candidates;
            report.verified = clusters.verified;
            report.near_duplicates = clusters.duplicates.len() as u64;
            for d in clusters.duplicates {
                dups.insert(
                    d.ordinal.into(),
                    Dup {
                        of: d.of.into(),
                        near: true,
                        similarity: d.similarity,
                    },
                );
            }
            report.cluster_seconds = started.elapsed().as_secs_f64();
        }
        // The largest the index gets: signatures and the exact-key table, while clustering
        // (8 bytes per document and band in flight, one band per thread), plus the verdicts.
        let bands_in_flight = if near {
            rayon::current_num_threads().min(self.bands.bands) * 8 * index.len()
        } else {
            0
        };
        report.index_bytes =
            (index.heap_bytes() + exact_bytes + bands_in_flight + dups.capacity() * 25) as u64;
        Ok(ordinal)
    }
}

/// `report.json`, pretty-printed.
pub(crate) fn write_report(path: &Path, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::Output {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, json + "\n").map_err(io(path))
}

/// What the filter pass leaves: its counters, the shards written, the documents read.
pub(crate) struct FilterDone {
    pub(crate) state: FilterState,
    pub(crate) outputs: Vec<OutputFile>,
    pub(crate) documents: u64,
    /// (ordinal, id) of every survivor read (a sharded run's merge names survivors that a
    /// later rank's duplicates point at).
    pub(crate) survivors: Vec<(u64, String)>,
}

/// The filter pass over batches in input order: duplicates dropped and listed, stages 3-6,
/// counters, shards (a new one at every input part).
pub(crate) struct Filtering<'a> {
    cleaner: &'a Cleaner,
    dups: &'a FxHashMap<u64, Dup>,
    roots: FxHashSet<u64>,
    survivor_ids: FxHashMap<u64, String>,
    survivors: Vec<(u64, String)>,
    state: FilterState,
    writer: ShardWriter,
    duplicates: Option<(PathBuf, BufWriter<File>)>,
    ordinal: u64,
    documents: u64,
    part: Option<usize>,
}

impl<'a> Filtering<'a> {
    /// Writes into `dir`; the first document read has ordinal `first_ordinal`.
    pub(crate) fn new(
        cleaner: &'a Cleaner,
        dir: &Path,
        dups: &'a FxHashMap<u64, Dup>,
        roots: FxHashSet<u64>,
        first_ordinal: u64,
    ) -> Result<Filtering<'a>> {
        let config = &cleaner.config;
        let duplicates = match config.dedup {
            Dedup::None => None,
            _ => {
                let path = dir.join("duplicates.jsonl");
                let file = File::create(&path).map_err(io(&path))?;
                Some((path, BufWriter::new(file)))
            }
        };
        Ok(Filtering {
            cleaner,
            dups,
            roots,
            survivor_ids: FxHashMap::default(),
            survivors: Vec::new(),
            state: FilterState::new(cleaner),
            writer: ShardWriter::new(dir, config.format, config.shard_bytes, &config.keep_fields),
            duplicates,
            ordinal: first_ordinal,
            documents: 0,
            part: None,
        })
    }

    /// The fields read: the text.
    pub(crate) fn keys(&self) -> Vec<String> {
        vec![self.cleaner.config.text_field.clone()]
    }

    /// The optional fields read: the id, then the kept fields.
    pub(crate) fn optional(&self) -> Vec<String> {
        let config = &self.cleaner.config;
        let mut optional = vec![config.id_field.clone()];
        optional.extend(config.keep_fields.iter().cloned());
        optional
    }

    /// One batch; returns the documents read so far.
    pub(crate) fn batch(&mut self, batch: Batch) -> Result<u64> {
        if self.part != Some(batch.part) {
            self.writer.cut()?;
            self.part = Some(batch.part);
        }
        let cleaner = self.cleaner;
        let mut ordinals = Vec::with_capacity(batch.items.len());
        let mut next = self.ordinal;
        for item in &batch.items {
            ordinals.push(matches!(item, Item::Doc(_)).then(|| {
                next += 1;
                next - 1
            }));
        }
        let dups = self.dups;
        let filtered: Vec<Option<Filtered>> = batch
            .items
            .par_iter()
            .zip(&ordinals)
            .map(|(item, ordinal)| match (item, ordinal) {
                (Item::Doc(r), Some(o)) if !dups.contains_key(o) => {
                    Some(cleaner.filter(&r.fields[0]))
                }
                _ => None,
            })
            .collect();
        for ((item, o), filtered) in batch.items.into_iter().zip(ordinals).zip(filtered) {
            let record = match item {
                Item::Bad(e) => {
                    self.state.malformed(&e);
                    continue;
                }
                Item::Doc(record) => record,
            };
            let o = o.unwrap_or_default();
            self.ordinal += 1;
            self.documents += 1;
            let text = &record.fields[0];
            let id = record
                .optional
                .first()
                .cloned()
                .flatten()
                .unwrap_or_else(|| format!("{}:{}", record.file.display(), record.line));
            self.state.documents_in += 1;
            self.state.bytes_in += text.len() as u64;
            if let Some(dup) = dups.get(&o) {
                self.state.count_duplicate(dup.near, text.len() as u64);
                if let Some((path, out)) = self.duplicates.as_mut() {
                    let line = duplicate_line(
                        &id,
                        &record,
                        o,
                        self.survivor_ids.get(&dup.of).map(String::as_str),
                        dup,
                    );
                    writeln!(out, "{line}").map_err(io(path))?;
                }
                continue;
            }
            if self.roots.contains(&o) {
                self.survivor_ids.insert(o, id.clone());
                self.survivors.push((o, id.clone()));
            }
            let Some(filtered) = filtered else { continue };
            if let Some(text) = self
                .state
                .count_filtered(cleaner, text.len() as u64, &filtered)
            {
                let language = filtered
                    .language
                    .map(|d| (crate::language::code(d.lang), d.confidence as f32));
                self.writer.write(&Document {
                    id: &id,
                    text,
                    language,
                    extra: record.optional.get(1..).unwrap_or(&[]),
                })?;
            }
        }
        Ok(self.ordinal)
    }

    /// Closes the shards and `duplicates.jsonl`.
    pub(crate) fn finish(self) -> Result<FilterDone> {
        if let Some((path, mut out)) = self.duplicates {
            out.flush().map_err(io(&path))?;
        }
        Ok(FilterDone {
            state: self.state,
            outputs: self.writer.finish()?,
            documents: self.documents,
            survivors: self.survivors,
        })
    }
}

/// One line of `duplicates.jsonl`; `survivor` is `None` only in a sharded run's rank, whose
/// survivor can be on an earlier rank (the merge fills it in).
fn duplicate_line(
    id: &str,
    record: &Record,
    ordinal: u64,
    survivor: Option<&str>,
    dup: &Dup,
) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "file": record.file.display().to_string(),
        "line": record.line,
        "ordinal": ordinal,
        "duplicate_of": survivor,
        "duplicate_of_ordinal": dup.of,
        "method": if dup.near { "minhash" } else { "exact" },
        "similarity": (dup.similarity * 1e4).round() / 1e4,
    })
}

/// The filter pass's counters.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct FilterState {
    pub(crate) documents_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) documents_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) stages: Vec<StageReport>,
    pub(crate) languages: BTreeMap<String, LanguageReport>,
    pub(crate) malformed: Malformed,
}

impl FilterState {
    fn new(cleaner: &Cleaner) -> FilterState {
        let c = &cleaner.config;
        let stages = Stage::ALL
            .iter()
            .map(|&stage| StageReport {
                stage: stage.name().into(),
                enabled: match stage {
                    Stage::ExactDedup => c.dedup != Dedup::None,
                    Stage::NearDedup => c.dedup == Dedup::Minhash,
                    Stage::Language => c.language.is_some(),
                    Stage::Cleaning => c.cleaning || c.min_chars > 0 || c.max_chars.is_some(),
                    Stage::Blacklist => !cleaner.lists.is_empty(),
                    Stage::Quality => c.quality.is_some(),
                },
                ..StageReport::default()
            })
            .collect();
        FilterState {
            documents_in: 0,
            bytes_in: 0,
            documents_out: 0,
            bytes_out: 0,
            stages,
            languages: BTreeMap::new(),
            malformed: Malformed::default(),
        }
    }

    /// Adds another rank's counters (which come after these in input order).
    pub(crate) fn add(&mut self, other: FilterState) {
        self.documents_in += other.documents_in;
        self.bytes_in += other.bytes_in;
        self.documents_out += other.documents_out;
        self.bytes_out += other.bytes_out;
        if self.stages.is_empty() {
            self.stages = other.stages;
        } else {
            for (s, o) in self.stages.iter_mut().zip(other.stages) {
                s.documents_in += o.documents_in;
                s.bytes_in += o.bytes_in;
                s.documents_out += o.documents_out;
                s.bytes_out += o.bytes_out;
                for (reason, n) in o.dropped {
                    *s.dropped.entry(reason).or_default() += n;
                }
            }
        }
        for (language, o) in other.languages {
            let l = self.languages.entry(language).or_default();
            l.documents += o.documents;
            l.bytes += o.bytes;
            l.documents_out += o.documents_out;
            l.bytes_out += o.bytes_out;
        }
        self.malformed.records += other.malformed.records;
        self.malformed.files += other.malformed.files;
        let room = EXAMPLES.saturating_sub(self.malformed.examples.len());
        self.malformed
            .examples
            .extend(other.malformed.examples.into_iter().take(room));
    }

    fn malformed(&mut self, e: &lmforge_corpus::Error) {
        if e.is_fatal() {
            self.malformed.files += 1;
        } else {
            self.malformed.records += 1;
        }
        if self.malformed.examples.len() < EXAMPLES {
            self.malformed.examples.push(e.to_string());
        }
    }

    fn pass(&mut self, stage: Stage, bytes_in: u64, bytes_out: u64) {
        let s = &mut self.stages[stage as usize];
        s.documents_in += 1;
        s.bytes_in += bytes_in;
        s.documents_out += 1;
        s.bytes_out += bytes_out;
    }

    fn dropped(&mut self, stage: Stage, bytes_in: u64, reason: &str) {
        let s = &mut self.stages[stage as usize];
        s.documents_in += 1;
        s.bytes_in += bytes_in;
        *s.dropped.entry(reason.to_string()).or_default() += 1;
    }

    fn count_duplicate(&mut self, near: bool, bytes: u64) {
        if near {
            self.pass(Stage::ExactDedup, bytes, bytes);
            self.dropped(Stage::NearDedup, bytes, "duplicate");
        } else {
            self.dropped(Stage::ExactDedup, bytes, "duplicate");
        }
    }

    /// Counts a document through every stage; its text when kept.
    fn count_filtered<'f>(
        &mut self,
        cleaner: &Cleaner,
        bytes: u64,
        filtered: &'f Filtered,
    ) -> Option<&'f str> {
        self.pass(Stage::ExactDedup, bytes, bytes);
        self.pass(Stage::NearDedup, bytes, bytes);
        let language = if cleaner.identifier.is_some() {
            filtered
                .language
                .map_or("und", |d| crate::language::code(d.lang))
        } else {
            "und"
        };
        let lang = self.languages.entry(language.to_string()).or_default();
        lang.documents += 1;
        lang.bytes += bytes;
        let cleaned = filtered.cleaned_bytes.unwrap_or_default() as u64;
        let (stop, reason) = match &filtered.outcome {
            Outcome::Kept(_) => (None, ""),
            Outcome::Dropped { stage, reason } => (Some(*stage), reason.as_str()),
        };
        for stage in [
            Stage::Language,
            Stage::Cleaning,
            Stage::Blacklist,
            Stage::Quality,
        ] {
            let before = if stage == Stage::Language || stage == Stage::Cleaning {
                bytes
            } else {
                cleaned
            };
            if stop == Some(stage) {
                self.dropped(stage, before, reason);
                return None;
            }
            let after = if stage == Stage::Language {
                bytes
            } else {
                cleaned
            };
            self.pass(stage, before, after);
        }
        let Outcome::Kept(text) = &filtered.outcome else {
            return None;
        };
        let lang = self.languages.entry(language.to_string()).or_default();
        lang.documents_out += 1;
        lang.bytes_out += text.len() as u64;
        self.documents_out += 1;
        self.bytes_out += text.len() as u64;
        Some(text)
    }
}

/// One pass over the input: what to read, and whom to tell.
pub(crate) struct Reading<'a> {
    pub(crate) parts: &'a [Part],
    /// Lines before each part's first line, when known (a sharded run's filter step); else
    /// counted on as the parts of one file are read in order.
    pub(crate) lines: Option<&'a [u64]>,
    pub(crate) keys: &'a [String],
    pub(crate) optional: &'a [String],
    pub(crate) cancel: &'a AtomicBool,
    pub(crate) pass: Pass,
    pub(crate) file_bytes: u64,
    pub(crate) progress: &'a (dyn Fn(&Progress) + Sync),
}

impl Reading<'_> {
    /// Reads on a thread of its own and hands each batch to `f` (which returns the documents
    /// read so far), reporting progress after each; stops with [`Error::Interrupted`] once
    /// `cancel` is set.
    pub(crate) fn each_batch(&self, mut f: impl FnMut(Batch) -> Result<u64>) -> Result<()> {
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = sync_channel::<Batch>(4);
            scope.spawn(|| read(self, tx));
            for batch in rx {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                let bytes = batch.bytes_read;
                let documents = f(batch)?;
                (self.progress)(&Progress {
                    pass: self.pass,
                    bytes,
                    total_bytes: self.file_bytes,
                    documents,
                });
            }
            Ok(())
        })?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }
}

/// The reader thread: records of each part in batches (a batch never spans two parts, and
/// every part ends with one that says how many lines it held); a fatal error ends that part
/// and reading goes on with the next.
fn read(reading: &Reading<'_>, tx: SyncSender<Batch>) {
    let mut done = 0u64;
    let mut previous: Option<(&Part, u64)> = None;
    for (at, part) in reading.parts.iter().enumerate() {
        let before = match (part.span, reading.lines, previous) {
            (lmforge_corpus::Span::RowGroups { first_row, .. }, _, _) => first_row,
            (_, Some(lines), _) => lines[at],
            (_, None, Some((p, line))) if p.file == part.file => line,
            _ => 0,
        };
        let mut reader = Reader::parts(vec![part.clone()], reading.keys)
            .optional(reading.optional)
            .first_line(before);
        let mut items = Vec::with_capacity(BATCH_DOCS);
        let mut bytes = 0;
        loop {
            let next = reader.next();
            let end = next.is_none();
            match next {
                Some(Ok(record)) => {
                    bytes += record.fields[0].len();
                    items.push(Item::Doc(record));
                }
                Some(Err(e)) => items.push(Item::Bad(e)),
                None => {}
            }
            if end || items.len() >= BATCH_DOCS || bytes >= BATCH_BYTES {
                if reading.cancel.load(Ordering::Relaxed) {
                    return;
                }
                let bytes_read = if end {
                    done + part.bytes
                } else {
                    done + reader.bytes_read()
                };
                let batch = Batch {
                    items: std::mem::take(&mut items),
                    bytes_read,
                    part: at,
                    lines: end.then(|| reader.line() - before),
                };
                if tx.send(batch).is_err() {
                    return;
                }
                bytes = 0;
            }
            if end {
                break;
            }
        }
        previous = Some((part, reader.line()));
        done += part.bytes;
    }
}
