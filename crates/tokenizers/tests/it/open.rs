use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use lmforge_bpe::{Bpe, BpeTrainer};
use lmforge_tokenizer::Kind;
use lmforge_tokenizers::{open_bpe, open_gpt2_files, open_tokenizer, write_tokenizer_json};
use proptest::prelude::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lmforge-tokenizers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bpe() -> &'static Bpe {
    static CELL: OnceLock<Bpe> = OnceLock::new();
    CELL.get_or_init(|| {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("Bonjour à tous, voici la phrase numéro {i} du petit corpus."))
            .collect();
        let mut trainer = BpeTrainer::builder()
            .vocab_size(400)
            .special_tokens(["<|endoftext|>"])
            .build()
            .unwrap();
        trainer.feed(&texts);
        trainer.train().unwrap().0
    })
}

#[test]
fn tokenizer_files_of_every_kind_open() {
    let dir = temp_dir("kinds");
    let text = "Bonjour à tous";
    let expected = bpe().encode_ordinary(text);
    // tokenizer.json, BPE.
    let json = dir.join("bpe.json");
    bpe().save(&json).unwrap();
    let opened = open_tokenizer(&json).unwrap();
    assert_eq!(opened.kind(), Kind::Bpe);
    assert_eq!(opened.encode(text).unwrap(), expected);
    assert_eq!(opened.eod_id(), bpe().special_id("<|endoftext|>"));
    assert_eq!(
        opened.pad_id(),
        None,
        "no pad token: callers must be told one"
    );
    // GPT-2's two files, as a folder and as Megatron's pair of flags.
    bpe().save_vocab_merges(&dir).unwrap();
    let gpt2 = open_gpt2_files(dir.join("vocab.json"), dir.join("merges.txt")).unwrap();
    assert_eq!(gpt2.encode(text).unwrap(), expected);
    assert_eq!(
        open_tokenizer(&dir).unwrap().encode(text).unwrap(),
        expected
    );
    // tiktoken, plain and compressed.
    let ranks = bpe().to_tiktoken();
    std::fs::write(dir.join("r.tiktoken"), &ranks).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(ranks.as_bytes()).unwrap();
    std::fs::write(dir.join("r.tiktoken.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(
        dir.join("r.tiktoken.zst"),
        zstd::encode_all(ranks.as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let plain = open_tokenizer(dir.join("r.tiktoken"))
        .unwrap()
        .encode(text)
        .unwrap();
    for name in ["r.tiktoken.gz", "r.tiktoken.zst"] {
        let got = open_tokenizer(dir.join(name))
            .unwrap()
            .encode(text)
            .unwrap();
        assert_eq!(got, plain, "{name}");
    }
    assert_eq!(
        open_bpe(dir.join("r.tiktoken"), lmforge_bpe::Flavour::Gpt2)
            .unwrap()
            .encode_ordinary(text),
        plain
    );
    // A BERT vocab.txt and a WordPiece tokenizer.json.
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nbon\n##jour\n").unwrap();
    let wp = open_tokenizer(&vocab).unwrap();
    assert_eq!(wp.kind(), Kind::WordPiece);
    assert_eq!(wp.encode("Bonjour").unwrap(), vec![5, 6]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_is_not_a_tokenizer_is_an_error_naming_the_file() {
    let dir = temp_dir("broken");
    std::fs::write(
        dir.join("broken.json"),
        "{\"model\": {\"type\": \"Unigram\"}}",
    )
    .unwrap();
    let err = open_tokenizer(dir.join("broken.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("broken.json") && err.contains("Unigram"),
        "{err}"
    );
    std::fs::write(dir.join("bad.tiktoken.gz"), b"not gzip").unwrap();
    let err = open_tokenizer(dir.join("bad.tiktoken.gz"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bad.tiktoken.gz"), "{err}");
    let err = open_tokenizer(dir.join("missing.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes stand in a tokenizer file of any kind, opening it is a value or an
    /// error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                   kind in 0usize..4) {
        let dir = temp_dir("arbitrary");
        let name = ["tokenizer.json", "vocab.txt", "r.tiktoken", "r.tiktoken.zst"][kind];
        std::fs::write(dir.join(name), &bytes).unwrap();
        let _ = open_tokenizer(dir.join(name));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A tokenizer of either kind written as tokenizer.json through the trait opens back as a
    /// tokenizer that encodes and decodes every text alike.
    #[test]
    fn written_tokenizers_read_back_the_same(text in "\\PC{0,40}") {
        let dir = temp_dir("written");
        std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nbon\n##jour\na\n").unwrap();
        let wordpiece = open_tokenizer(dir.join("vocab.txt")).unwrap();
        let bpe: &dyn lmforge_tokenizer::Tokenizer = bpe();
        for (name, tokenizer) in [("bpe", bpe), ("wordpiece", wordpiece.as_ref())] {
            let path = dir.join(format!("{name}.json"));
            write_tokenizer_json(tokenizer, &path).unwrap();
            let back = open_tokenizer(&path).unwrap();
            prop_assert_eq!(back.kind(), tokenizer.kind());
            let ids = tokenizer.encode(&text).unwrap();
            prop_assert_eq!(back.encode(&text).unwrap(), ids.clone());
            prop_assert_eq!(back.decode(&ids).unwrap(), tokenizer.decode(&ids).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
