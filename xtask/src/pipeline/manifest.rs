//! `runs/NAME/manifest.json`: what each stage read, wrote and was given, as sha256s; the
//! record a re-run consults to skip unchanged stages.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::dataset::hex;
use crate::dataset::sha256_file;
use crate::write_atomic;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The config file of the last run, and its sha256.
    pub config: String,
    pub config_sha256: String,
    /// Every setting of the last run, defaults included.
    pub settings: Value,
    /// The last complete run's wall time, skipped stages included.
    pub seconds: f64,
    pub stages: Vec<StageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    /// ok or failed.
    pub status: String,
    /// sha256 of the stage name, parameters and input hashes: equal keys, equal outputs.
    pub key: String,
    /// This run reused the outputs of the run that recorded them.
    pub skipped: bool,
    pub params: Value,
    pub seed: Option<u64>,
    /// Input file (relative to the run folder, or as the config names it) → sha256.
    pub inputs: BTreeMap<String, String>,
    /// Output file → sha256.
    pub outputs: BTreeMap<String, String>,
    /// The commands, as they can be re-typed in the run folder.
    pub commands: Vec<String>,
    pub seconds: f64,
    pub git_commit: String,
    pub rustc: String,
    pub finished_unix: u64,
    pub error: Option<String>,
}

/// Where the binaries came from.
pub struct Provenance {
    pub git_commit: String,
    pub rustc: String,
}

impl Provenance {
    pub fn collect(root: &Path) -> Provenance {
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let commit = run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        // Uncommitted changes to tracked files make the commit an incomplete description.
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty());
        Provenance {
            git_commit: if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            },
            rustc: run(
                &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
                &["--version"],
            )
            .unwrap_or_else(|| "unknown".into()),
        }
    }
}

impl StageRecord {
    pub fn failed(
        name: &str,
        params: &Value,
        provenance: &Provenance,
        error: &anyhow::Error,
    ) -> StageRecord {
        StageRecord {
            name: name.into(),
            status: "failed".into(),
            key: String::new(),
            skipped: false,
            params: params.clone(),
            seed: params.get("seed").and_then(Value::as_u64),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            commands: Vec::new(),
            seconds: 0.0,
            git_commit: provenance.git_commit.clone(),
            rustc: provenance.rustc.clone(),
            finished_unix: now_unix(),
            error: Some(format!("{error:#}")),
        }
    }

    /// Whether this record's outputs can stand for a run whose key is `key`: the same key, a
    /// success, and the stage's `declared` outputs still holding exactly the recorded files
    /// and bytes.
    pub fn reusable(&self, key: &str, out: &Path, declared: &[PathBuf]) -> bool {
        if self.status != "ok" || self.key != key {
            return false;
        }
        match hash_paths(out, declared) {
            Ok(now) => now == self.outputs,
            Err(_) => false,
        }
    }
}

impl Manifest {
    /// The manifest at `path`, or an empty one when there is none yet. An unreadable manifest
    /// is an error rather than a silent fresh start: it would re-run hours of stages.
    pub fn load(path: &Path) -> Result<Manifest> {
        if !path.exists() {
            return Ok(Manifest::default());
        }
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a pipeline manifest (remove it to start the run over)",
                path.display()
            )
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(
            path,
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
        )
    }

    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Replaces the record of `record.name`, keeping the stages in pipeline order.
    pub fn put(&mut self, record: StageRecord) {
        self.stages.retain(|s| s.name != record.name);
        self.stages.push(record);
        let order = |name: &str| super::STAGES.iter().position(|s| *s == name);
        self.stages.sort_by_key(|s| order(&s.name));
    }
}

/// Files whose bytes carry timings or speeds (reports, metrics logs, generation speed): hashed
/// and recorded, but outside the promise that a config and seed give the same bytes.
pub fn is_volatile(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.ends_with("report.json") || name == "metrics.jsonl" || file.starts_with("samples/")
}

/// sha256 of every file under `paths` (files or folders, relative to `base` unless absolute),
/// keyed by the path as given joined with the file's place below it.
pub fn hash_paths(base: &Path, paths: &[PathBuf]) -> Result<BTreeMap<String, String>> {
    let mut hashes = BTreeMap::new();
    for path in paths {
        let full = base.join(path);
        let mut files = Vec::new();
        collect_files(&full, &mut files).with_context(|| format!("listing {}", full.display()))?;
        for file in files {
            let below = file.strip_prefix(&full).unwrap_or(&file);
            let name = if below.as_os_str().is_empty() {
                path.clone()
            } else {
                path.join(below)
            };
            hashes.insert(
                name.to_string_lossy().replace('\\', "/"),
                sha256_file(&file)?,
            );
        }
    }
    Ok(hashes)
}

/// Every file under `path` (itself, if a file), sorted.
pub(super) fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("{} is missing", path.display()))?;
    if meta.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<_> = fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for entry in entries {
        collect_files(&entry, files)?;
    }
    Ok(())
}

/// The content address of a stage run: its name, parameters and input bytes. Input paths
/// outside the run folder enter by file name only, so a moved corpus keeps its key; volatile
/// inputs (timings) do not enter, so a re-run upstream stage that wrote the same artifacts
/// leaves the stages after it skipped.
pub fn stage_key(name: &str, params: &Value, inputs: &BTreeMap<String, String>) -> String {
    let inputs: BTreeMap<&str, &String> = inputs
        .iter()
        .filter(|(path, _)| !is_volatile(path))
        .map(|(path, hash)| {
            let short = if Path::new(path).is_absolute() {
                path.rsplit('/').next().unwrap_or(path)
            } else {
                path
            };
            (short, hash)
        })
        .collect();
    let canonical = serde_json::json!({ "stage": name, "params": params, "inputs": inputs });
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lmforge-manifest-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("stage/sub")).unwrap();
        dir
    }

    #[test]
    fn the_key_changes_with_parameters_and_input_bytes_only() {
        let inputs = BTreeMap::from([("data/a.bin".to_string(), "00".to_string())]);
        let key = stage_key("train", &json!({"lr": 1}), &inputs);
        assert_eq!(key, stage_key("train", &json!({"lr": 1}), &inputs));
        assert_ne!(key, stage_key("train", &json!({"lr": 2}), &inputs));
        assert_ne!(key, stage_key("eval", &json!({"lr": 1}), &inputs));
        let other = BTreeMap::from([("data/a.bin".to_string(), "01".to_string())]);
        assert_ne!(key, stage_key("train", &json!({"lr": 1}), &other));
        let mut timed = inputs.clone();
        timed.insert("data/a.report.json".into(), "ff".into());
        assert_eq!(key, stage_key("train", &json!({"lr": 1}), &timed));
        // A corpus moved elsewhere is the same input.
        let here = BTreeMap::from([("/x/en.jsonl.gz".to_string(), "00".to_string())]);
        let there = BTreeMap::from([("/y/en.jsonl.gz".to_string(), "00".to_string())]);
        assert_eq!(
            stage_key("clean", &json!({}), &here),
            stage_key("clean", &json!({}), &there)
        );
    }

    #[test]
    fn a_record_is_reusable_only_while_its_outputs_are_untouched() {
        let dir = scratch("reuse");
        fs::write(dir.join("stage/a.txt"), "a").unwrap();
        fs::write(dir.join("stage/sub/b.txt"), "b").unwrap();
        let outputs = hash_paths(&dir, &[PathBuf::from("stage")]).unwrap();
        assert_eq!(
            outputs.keys().collect::<Vec<_>>(),
            ["stage/a.txt", "stage/sub/b.txt"]
        );
        let record = StageRecord {
            key: "k".into(),
            status: "ok".into(),
            outputs,
            ..StageRecord::failed(
                "train",
                &json!({}),
                &Provenance {
                    git_commit: "c".into(),
                    rustc: "r".into(),
                },
                &anyhow::anyhow!("x"),
            )
        };
        let declared = [PathBuf::from("stage")];
        assert!(record.reusable("k", &dir, &declared));
        assert!(!record.reusable("other key", &dir, &declared));
        fs::write(dir.join("stage/sub/b.txt"), "changed").unwrap();
        assert!(!record.reusable("k", &dir, &declared));
        fs::write(dir.join("stage/sub/b.txt"), "b").unwrap();
        fs::write(dir.join("stage/extra.txt"), "").unwrap();
        assert!(
            !record.reusable("k", &dir, &declared),
            "an extra file is a change"
        );
        fs::remove_dir_all(dir.join("stage")).unwrap();
        assert!(!record.reusable("k", &dir, &declared));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_stay_in_pipeline_order_and_a_corrupt_manifest_is_an_error() {
        let dir = scratch("order");
        let mut manifest = Manifest::default();
        let provenance = Provenance {
            git_commit: "c".into(),
            rustc: "r".into(),
        };
        for name in ["train", "clean", "train"] {
            manifest.put(StageRecord::failed(
                name,
                &json!({}),
                &provenance,
                &anyhow::anyhow!("e"),
            ));
        }
        let names: Vec<_> = manifest.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["clean", "train"]);
        let path = dir.join("manifest.json");
        manifest.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().stages.len(), 2);
        fs::write(&path, "{ truncated").unwrap();
        let err = format!("{:#}", Manifest::load(&path).unwrap_err());
        assert!(
            err.contains("manifest.json") && err.contains("not a pipeline manifest"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn volatile_files_are_the_timed_ones() {
        assert!(is_volatile("clean/report.json"));
        assert!(is_volatile("data/corpus.report.json"));
        assert!(is_volatile("train/metrics.jsonl"));
        assert!(!is_volatile("train/iter_0000020/model.safetensors"));
        assert!(!is_volatile("tokenizer/tokenizer.json"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// A damaged manifest is an error naming the file, never a panic or a silent fresh
        /// start.
        #[test]
        fn damaged_manifests_are_errors(bytes in proptest::collection::vec(proptest::num::u8::ANY, 1..200)) {
            let dir = scratch("fuzz");
            let path = dir.join("manifest.json");
            fs::write(&path, &bytes).unwrap();
            if let Err(err) = Manifest::load(&path) {
                let message = format!("{err:#}");
                proptest::prop_assert!(message.contains("manifest.json"), "{}", message);
            }
            let _ = fs::remove_dir_all(&dir);
        }
    }
}
