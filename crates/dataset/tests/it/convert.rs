//! Corpus conversion end to end with real tokenizers: order, threads, bad records, damaged
//! inputs, several keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use lmforge_bpe::{Bpe, BpeTrainer};
use lmforge_dataset::{
    ConvertOptions, DType, IndexedDataset, convert, open_tokenizer, output_prefix,
};
use lmforge_tokenizer::Tokenizer;

use crate::temp_dir;

fn corpus(lang: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../datasets/default/{lang}.jsonl.gz"))
}

/// A 1,000-token BPE trained on the French corpus, `<|endoftext|>` its EOD.
fn bpe() -> &'static Bpe {
    static CELL: OnceLock<Bpe> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut texts = Vec::new();
        for record in lmforge_corpus::Reader::new(vec![corpus("fr")], &["text"]).take(200) {
            texts.push(record.unwrap().fields.remove(0));
        }
        let mut trainer = BpeTrainer::builder()
            .vocab_size(1000)
            .special_tokens(["<|endoftext|>"])
            .build()
            .unwrap();
        trainer.feed(&texts);
        trainer.train().unwrap().0
    })
}

fn texts_of(files: &[PathBuf], key: &str) -> Vec<String> {
    lmforge_corpus::Reader::new(files.to_vec(), &[key])
        .filter_map(Result::ok)
        .map(|mut r| r.fields.remove(0))
        .collect()
}

fn decoded(prefix: &Path, tokenizer: &dyn Tokenizer) -> Vec<String> {
    let data = IndexedDataset::open(prefix).unwrap();
    (0..data.num_documents())
        .map(|d| {
            let ids: Vec<u32> = data
                .document(d)
                .flat_map(|s| data.get(s).to_vec())
                .collect();
            tokenizer.decode(&ids).unwrap()
        })
        .collect()
}

#[test]
fn documents_in_input_order_whatever_the_thread_count() {
    let dir = temp_dir("convert-order");
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"text\": \"Bonjour à tous\"}\nnot json\n{\"title\": \"x\"}\n\n{\"text\": \"\"}\n{\"text\": \"Fin.\"}\n",
    )
    .unwrap();
    let parquet = dir.join("p.parquet");
    let column: ArrayRef = Arc::new(StringArray::from(vec!["Première ligne", "Deuxième"]));
    let batch = RecordBatch::try_from_iter([("text", column)]).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let files = vec![corpus("fr"), bad.clone(), parquet];

    let mut outputs = Vec::new();
    for workers in [1, 3] {
        let options = ConvertOptions {
            append_eod: true,
            workers,
            batch_bytes: 100_000,
            ..ConvertOptions::default()
        };
        let prefix = dir.join(format!("w{workers}"));
        let mut seen = Vec::new();
        let report = convert(files.clone(), bpe(), &prefix, &options, &mut |p| {
            seen.push(p.file_bytes)
        })
        .unwrap();
        assert!(seen.len() > 3, "progress after every batch");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        let stored: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert_eq!(
            seen.last(),
            Some(&stored),
            "all of every file read at the end"
        );
        assert_eq!(report.skipped, 2);
        assert!(
            report.skipped_examples[0].contains("bad.jsonl:2: malformed JSON"),
            "{:?}",
            report.skipped_examples
        );
        assert!(report.skipped_examples[1].contains("bad.jsonl:3: no field \"text\""));
        assert_eq!(report.outputs[0].dtype, DType::U16);
        let out = output_prefix(&prefix, "text");
        assert!(
            out.to_string_lossy()
                .ends_with(&format!("w{workers}_text_document"))
        );
        outputs.push(out);
    }
    for ext in ["bin", "idx"] {
        let a = std::fs::read(outputs[0].with_extension(ext)).unwrap();
        let b = std::fs::read(outputs[1].with_extension(ext)).unwrap();
        assert!(a == b, ".{ext} depends on the thread count");
    }

    // Every document decodes back to its text, EOD appended to all but the empty one.
    let want = texts_of(&files, "text");
    let got = decoded(&outputs[0], bpe());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        if w.is_empty() {
            assert_eq!(g, "");
        } else {
            assert_eq!(g.strip_suffix("<|endoftext|>"), Some(w.as_str()));
        }
    }
    let data = IndexedDataset::open(&outputs[0]).unwrap();
    assert_eq!(data.num_documents(), want.len());
    assert_eq!(
        data.len(),
        want.len() - 1,
        "the empty document has no sequence"
    );
}

#[test]
fn several_keys_and_a_wordpiece_tokenizer() {
    let dir = temp_dir("convert-keys");
    let input = dir.join("qa.jsonl");
    std::fs::write(
        &input,
        "{\"question\": \"Où est la gare ?\", \"answer\": \"Tout droit.\"}\n{\"question\": \"Quelle heure ?\", \"answer\": \"Midi\"}\n",
    )
    .unwrap();
    let vocab = dir.join("vocab.txt");
    let tokens = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nou\nest\nla\ngare\n?\ntout\ndroit\n.\nquelle\nheure\nmidi\n";
    std::fs::write(&vocab, tokens).unwrap();
    let wordpiece = open_tokenizer(&vocab).unwrap();
    let options = ConvertOptions {
        json_keys: vec!["question".into(), "answer".into()],
        append_eod: true,
        ..ConvertOptions::default()
    };
    let prefix = dir.join("qa");
    let report = convert(
        vec![input],
        wordpiece.as_ref(),
        &prefix,
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.outputs.len(), 2);
    let question = IndexedDataset::open(output_prefix(&prefix, "question")).unwrap();
    let answer = IndexedDataset::open(output_prefix(&prefix, "answer")).unwrap();
    // "Où est la gare ?" → ou est la gare ? [SEP]
    assert_eq!(question.get(0).to_vec(), [5, 6, 7, 8, 9, 3]);
    assert_eq!(answer.get(1).to_vec(), [15, 3]);
    assert_eq!(report.tokens, 6 + 4 + 4 + 2);
}

#[test]
fn fatal_input_errors_write_nothing() {
    let dir = temp_dir("convert-fatal");
    let gz = dir.join("cut.jsonl.gz");
    let full = std::fs::read(corpus("es")).unwrap();
    std::fs::write(&gz, &full[..full.len() / 3]).unwrap();
    let prefix = dir.join("out");
    let err = convert(
        vec![corpus("fr"), gz],
        bpe(),
        &prefix,
        &ConvertOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cut.jsonl.gz"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from("cut.jsonl.gz")],
        "only the input is left"
    );

    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "garbage\n").unwrap();
    let err = convert(
        vec![empty],
        bpe(),
        &prefix,
        &ConvertOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no documents"), "{err}");
    assert!(
        !output_prefix(&prefix, "text")
            .with_extension("idx")
            .exists()
    );
}

#[test]
fn append_eod_needs_an_eod_token() {
    let dir = temp_dir("convert-eod");
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, "[UNK]\na\n").unwrap();
    let tokenizer = open_tokenizer(&vocab).unwrap();
    let options = ConvertOptions {
        append_eod: true,
        ..ConvertOptions::default()
    };
    let err = convert(
        vec![corpus("fr")],
        tokenizer.as_ref(),
        &dir.join("x"),
        &options,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no end-of-document token"),
        "{err}"
    );
}
