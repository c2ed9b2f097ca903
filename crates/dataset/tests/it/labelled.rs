//! Labelled files and padded batches with a real WordPiece vocabulary whose pad id is not 0.

use lmforge_dataset::labelled::{self, IGNORE, LabelVocab};
use lmforge_dataset::padded::{self, bert_example};
use lmforge_dataset::{PadOptions, PadTo, Specials, open_tokenizer};

use crate::temp_dir;

const VOCAB: &str = "[UNK]\n[CLS]\n[SEP]\n[MASK]\nle\nchat\ndort\nparis\nest\nbelle\n##s\n[PAD]\n";

#[test]
fn text_classification_lines() {
    let dir = temp_dir("labelled-text");
    let good = dir.join("train.tsv");
    std::fs::write(&good, "le chat dort\t1\n\nparis est belle\t0\r\n").unwrap();
    let examples = labelled::read_text_classification(&good).unwrap();
    assert_eq!(examples.len(), 2);
    assert_eq!(
        (
            examples[1].text.as_str(),
            examples[1].label.as_str(),
            examples[1].line
        ),
        ("paris est belle", "0", 3)
    );
    for (body, expected) in [
        ("ok\t1\nno tab here\n", "train.tsv:2: no tab"),
        ("a\tb\t1\n", "train.tsv:1: more than one tab"),
        ("text\t\n", "train.tsv:1: label \"\""),
        ("\t1\n", "train.tsv:1: empty text"),
    ] {
        std::fs::write(&good, body).unwrap();
        let err = labelled::read_text_classification(&good)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{body:?}: {err}");
    }
    std::fs::write(&good, b"ok\t1\nbad \xff\t0\n").unwrap();
    let err = labelled::read_text_classification(&good)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.tsv:2: invalid UTF-8"), "{err}");
}

#[test]
fn token_classification_files_and_alignment() {
    let dir = temp_dir("labelled-ner");
    let text = dir.join("text.txt");
    let labels = dir.join("labels.txt");
    std::fs::write(&text, "le chat dort\nparis est belles\n").unwrap();
    std::fs::write(&labels, "O B-ANI O\nB-LOC O O\n").unwrap();
    let sentences = labelled::read_token_classification(&text, &labels).unwrap();
    let vocab = LabelVocab::from_labels(
        sentences
            .iter()
            .flat_map(|s| s.labels.iter().map(String::as_str)),
    );
    assert_eq!(vocab.len(), 3);
    std::fs::write(dir.join("vocab.txt"), VOCAB).unwrap();
    let tokenizer = open_tokenizer(dir.join("vocab.txt")).unwrap();
    let aligned = labelled::align_labels(tokenizer.as_ref(), &sentences[1], &vocab).unwrap();
    // paris est belle ##s: the second piece of "belles" carries no label.
    assert_eq!(aligned.ids, [7, 8, 9, 10]);
    let (loc, o) = (
        i64::from(vocab.id("B-LOC").unwrap()),
        i64::from(vocab.id("O").unwrap()),
    );
    assert_eq!(aligned.labels, [loc, o, o, IGNORE]);

    std::fs::write(&labels, "O B-ANI\nB-LOC O O\n").unwrap();
    let err = labelled::read_token_classification(&text, &labels)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels.txt:1: 2 labels for the 3 words"),
        "{err}"
    );
    std::fs::write(&labels, "O B-ANI O\n").unwrap();
    let err = labelled::read_token_classification(&text, &labels)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels.txt:2") && err.contains("has 2 lines"),
        "{err}"
    );

    let conll = dir.join("train.conll");
    std::fs::write(
        &conll,
        "-DOCSTART- O\n\nle DT O\nchat NN B-ANI\n\nparis B-LOC\n",
    )
    .unwrap();
    let sentences = labelled::read_conll(&conll).unwrap();
    assert_eq!(sentences.len(), 2);
    assert_eq!(sentences[0].labels, ["O", "B-ANI"]);
    assert_eq!(sentences[1].line, 6);
    std::fs::write(&conll, "le O\nchat\n").unwrap();
    let err = labelled::read_conll(&conll).unwrap_err().to_string();
    assert!(err.contains("train.conll:2"), "{err}");
    let unknown = LabelVocab::from_labels(["O"]);
    let err = labelled::align_labels(tokenizer.as_ref(), &sentences[0], &unknown).unwrap_err();
    assert!(
        err.to_string()
            .contains("train.conll:3: label \"B-ANI\" is not in the label vocabulary"),
        "{err}"
    );
}

#[test]
fn padded_batches_use_the_tokenizers_pad_id() {
    let dir = temp_dir("padded");
    std::fs::write(dir.join("vocab.txt"), VOCAB).unwrap();
    let tokenizer = open_tokenizer(dir.join("vocab.txt")).unwrap();
    let pad_id = tokenizer.pad_id().unwrap();
    assert_eq!(
        pad_id, 11,
        "[PAD] is the last line of this vocabulary, not 0"
    );
    let specials = Specials::of(tokenizer.as_ref()).unwrap();
    let a = tokenizer.encode("le chat dort").unwrap();
    let b = tokenizer.encode("paris").unwrap();
    let x = bert_example(&a, Some(&b), specials, 16).unwrap();
    let y = bert_example(&b, None, specials, 16).unwrap();
    let options = PadOptions {
        pad_id,
        pad_to: PadTo::Longest,
        multiple_of: None,
    };
    let batch = padded::pad(&[&x, &y], options).unwrap();
    assert_eq!(batch.seq_length, 7);
    assert_eq!(&batch.ids[..7], &[1, 4, 5, 6, 2, 7, 2]);
    assert_eq!(&batch.ids[7..], &[1, 7, 2, 11, 11, 11, 11]);
    assert_eq!(&batch.type_ids[..7], &[0, 0, 0, 0, 0, 1, 1]);
    assert_eq!(&batch.attention_mask[7..], &[1, 1, 1, 0, 0, 0, 0]);
    let fixed = padded::pad(
        &[&y],
        PadOptions {
            pad_to: PadTo::Length(8),
            ..options
        },
    )
    .unwrap();
    assert_eq!(fixed.ids, [1, 7, 2, 11, 11, 11, 11, 11]);
}
