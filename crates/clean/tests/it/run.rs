use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use lmforge_clean::synthetic::{self, Options};
use lmforge_clean::{Cleaner, Config, Dedup, Error, Language, OutputFormat};

use crate::{dedup_only, read_output, run, temp_dir};

fn write_jsonl(path: &PathBuf, docs: &[synthetic::Document]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for d in docs {
        serde_json::to_writer(&mut out, &serde_json::json!({"id": d.id, "text": d.text})).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

#[test]
fn planted_near_duplicates_are_found_with_precision_and_recall() {
    let dir = temp_dir("planted");
    let docs = synthetic::generate(&Options {
        documents: 6000,
        seed: 3,
        ..Options::default()
    });
    // Split over two files, one compressed, so ordinals cross files.
    let (a, b) = docs.split_at(2500);
    let first = dir.join("a.jsonl");
    write_jsonl(&first, a);
    let second = dir.join("b.jsonl.zst");
    let plain = dir.join("b.jsonl");
    write_jsonl(&plain, b);
    std::fs::write(
        &second,
        zstd::encode_all(std::fs::read(&plain).unwrap().as_slice(), 3).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&plain).unwrap();

    let out = dir.join("out");
    let report = run(dedup_only(Dedup::Minhash), &[first, second], &out).unwrap();
    let dropped: HashSet<usize> = std::fs::read_to_string(out.join("duplicates.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["ordinal"].as_u64().unwrap() as usize
        })
        .collect();
    let (precision, recall) = synthetic::precision_recall(&docs, &dropped, 0.8);
    assert!(
        precision >= 0.97 && recall >= 0.97,
        "P {precision} R {recall}"
    );
    assert_eq!(report.dedup.near_duplicates as usize, dropped.len());
    assert_eq!(report.documents_out as usize, docs.len() - dropped.len());
    // Every dropped document names the survivor, which was written.
    let kept: HashSet<String> = read_output(&out).into_iter().map(|(id, _)| id).collect();
    for line in std::fs::read_to_string(out.join("duplicates.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let survivor = v["duplicate_of"].as_str().unwrap();
        assert!(kept.contains(survivor), "{line}");
        assert!(!kept.contains(v["id"].as_str().unwrap()));
        assert!(v["duplicate_of_ordinal"].as_u64() < v["ordinal"].as_u64());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_does_not_depend_on_threads_and_reruns_replace_it() {
    let dir = temp_dir("threads");
    let docs = synthetic::generate(&Options {
        documents: 3000,
        seed: 5,
        ..Options::default()
    });
    let input = dir.join("in.jsonl");
    write_jsonl(&input, &docs);
    let mut outputs = Vec::new();
    for threads in [1, 2, 3] {
        let out = dir.join(format!("out{threads}"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let config = Config {
            min_chars: 10,
            shard_bytes: 1 << 20,
            ..Config::default()
        };
        pool.install(|| run(config, std::slice::from_ref(&input), &out))
            .unwrap();
        let mut files = Vec::new();
        for name in [
            "part-00000.jsonl.zst",
            "part-00001.jsonl.zst",
            "duplicates.jsonl",
        ] {
            files.push(std::fs::read(out.join(name)).unwrap());
        }
        outputs.push(files);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
    // A second run into the same directory replaces the earlier output whole.
    let out = dir.join("out1");
    std::fs::write(out.join("part-00009.jsonl.zst"), b"stale").unwrap();
    run(dedup_only(Dedup::None), std::slice::from_ref(&input), &out).unwrap();
    assert!(!out.join("part-00009.jsonl.zst").exists());
    assert!(!out.join("duplicates.jsonl").exists());
    assert_eq!(read_output(&out).len(), docs.len());
    // Nothing is left beside it.
    let siblings: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings.len(), 4, "{siblings:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_counted_named_and_skipped() {
    let dir = temp_dir("bad");
    let good = "Un texte parfaitement correct qui parle d'une tortue et d'un jardin.";
    let mut jsonl = Vec::new();
    jsonl.extend_from_slice(format!("{{\"text\": \"{good}\", \"id\": 7}}\n").as_bytes());
    jsonl.extend_from_slice(b"{\"text\": \"broken\n");
    jsonl.extend_from_slice(b"{\"title\": \"no text\"}\n");
    jsonl.extend_from_slice(b"{\"text\": \"bad \xff utf8\"}\n");
    jsonl.extend_from_slice(b"{\"text\": 12}\n");
    jsonl.extend_from_slice(
        "{\"text\": \"Une autre histoire, sans rapport, de bateaux sur la mer.\"}\n".as_bytes(),
    );
    let mixed = dir.join("mixed.jsonl");
    std::fs::write(&mixed, &jsonl).unwrap();
    // A gzip file cut in the middle: its first records count, then the file is reported.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        writeln!(gz, "{{\"text\": \"document {i} {good}\"}}").unwrap();
    }
    let gz = gz.finish().unwrap();
    let truncated = dir.join("truncated.jsonl.gz");
    std::fs::write(&truncated, &gz[..gz.len() / 2]).unwrap();
    let corrupt = dir.join("corrupt.parquet");
    std::fs::write(&corrupt, b"PAR1 this is not parquet").unwrap();
    let last = dir.join("last.jsonl");
    std::fs::write(&last, format!("{{\"text\": \"{good} Fin.\"}}\n")).unwrap();

    let out = dir.join("out");
    // Exact dedup only: the generated documents are near duplicates of each other.
    let config = Config {
        dedup: Dedup::Exact,
        min_chars: 10,
        quality: None,
        ..Config::default()
    };
    let report = run(config, &[mixed, truncated, corrupt, last], &out).unwrap();
    assert_eq!(report.malformed.records, 4, "{:?}", report.malformed);
    assert_eq!(report.malformed.files, 2, "{:?}", report.malformed);
    let examples = report.malformed.examples.join("\n");
    for needle in [
        "mixed.jsonl:2: malformed JSON",
        "mixed.jsonl:3: no field \"text\"",
        "mixed.jsonl:4: invalid UTF-8",
        "mixed.jsonl:5: field \"text\" is a number",
        "truncated.jsonl.gz",
        "corrupt.parquet",
    ] {
        assert!(examples.contains(needle), "{needle} not in\n{examples}");
    }
    let written = read_output(&out);
    let ids: Vec<&str> = written.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids[0], "7", "a numeric id is kept as text");
    assert!(
        ids[1].ends_with("mixed.jsonl:6"),
        "generated id: {}",
        ids[1]
    );
    assert!(ids.last().unwrap().ends_with("last.jsonl:1"));
    assert!(written.len() > 100, "records before the truncation count");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_and_interruptions_leave_nothing() {
    let dir = temp_dir("fail");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"hello there\"}\n").unwrap();
    // A directory that is not an earlier output is not replaced.
    let precious = dir.join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "keep me").unwrap();
    let e = run(Config::default(), std::slice::from_ref(&input), &precious).unwrap_err();
    assert!(e.to_string().contains("refusing"), "{e}");
    assert_eq!(
        std::fs::read_to_string(precious.join("notes.txt")).unwrap(),
        "keep me"
    );
    // Cancelled before the first batch: error, no output, no temporary directory.
    let out = dir.join("out");
    let cancel = AtomicBool::new(true);
    let e = Cleaner::new(Config::default())
        .unwrap()
        .run(std::slice::from_ref(&input), &out, &|_| {}, &cancel)
        .unwrap_err();
    assert!(matches!(e, Error::Interrupted), "{e}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // A bad configuration names the field.
    let e = Cleaner::new(Config {
        language: Some(Language {
            languages: vec!["xx".into()],
            ..Language::default()
        }),
        ..Config::default()
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("--languages"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_default_corpus_by_language_with_blacklists_and_parquet() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = temp_dir("default");
    let out = dir.join("out");
    let config = Config {
        language: Some(Language {
            languages: vec!["fr".into(), "es".into()],
            ..Language::default()
        }),
        blacklists: vec![root.join("datasets/blacklists")],
        keep_fields: vec!["source".into()],
        format: OutputFormat::Parquet,
        ..Config::default()
    };
    let files =
        lmforge_corpus::expand(&[root.join("datasets/default").display().to_string()]).unwrap();
    let report = run(config, &files, &out).unwrap();
    let by_name = |name: &str| report.stages.iter().find(|s| s.stage == name).unwrap();
    // Shakespeare is English: the language stage drops it.
    assert!(
        by_name("language").dropped["other_language"] >= 70,
        "{:?}",
        by_name("language")
    );
    assert!(report.languages["fr"].documents_out > 200);
    assert!(report.languages["es"].documents_out > 200);
    assert_eq!(report.languages.get("en").map_or(0, |l| l.documents_out), 0);
    assert!(by_name("blacklist").enabled);
    // Every stage's counts chain into the next.
    for pair in report.stages.windows(2) {
        assert_eq!(pair[0].documents_out, pair[1].documents_in, "{pair:?}");
        let dropped: u64 = pair[0].dropped.values().sum();
        assert_eq!(pair[0].documents_in, pair[0].documents_out + dropped);
    }
    assert_eq!(
        report.stages.last().unwrap().documents_out,
        report.documents_out
    );
    // The parquet output reads back, with the kept field.
    let shards: Vec<PathBuf> = report.outputs.iter().map(|o| out.join(&o.file)).collect();
    assert!(shards[0].extension().unwrap() == "parquet");
    let rows: Vec<_> = lmforge_corpus::Reader::new(shards, &["text", "language", "source"])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len() as u64, report.documents_out);
    assert!(
        rows.iter()
            .all(|r| r.fields[1] == "fr" || r.fields[1] == "es")
    );
    assert!(rows.iter().all(|r| !r.fields[2].is_empty()));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["documents_out"].as_u64(), Some(report.documents_out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cleaning_cleaned_output_changes_nothing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = temp_dir("idempotent");
    let files = lmforge_corpus::expand(&[root
        .join("datasets/default/es.jsonl.gz")
        .display()
        .to_string()])
    .unwrap();
    let config = Config {
        blacklists: vec![root.join("datasets/blacklists")],
        ..Config::default()
    };
    let first = dir.join("first");
    let once = run(config.clone(), &files, &first).unwrap();
    let shards: Vec<PathBuf> = once.outputs.iter().map(|o| first.join(&o.file)).collect();
    let second = dir.join("second");
    let twice = run(config, &shards, &second).unwrap();
    assert_eq!(twice.documents_in, once.documents_out);
    assert_eq!(twice.documents_out, once.documents_out, "{}", twice.table());
    assert_eq!(read_output(&first), read_output(&second));
    std::fs::remove_dir_all(&dir).unwrap();
}
