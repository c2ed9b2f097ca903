//! Oracle 2: Hugging Face's `tokenizers` crate loads the tokenizer.json we write and encodes
//! exactly as we do; and we read what it writes.

use lmforge_bpe::{Allowed, Bpe, BpeTrainer, pretokenize};

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = crate::corpus_texts(20_000)
        .into_iter()
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .take(600)
        .collect();
    texts.extend(
        [
            "  leading and trailing  ",
            "tabs\tand\nnewlines\n\n\n",
            "I'm sure they'll've done it",
            "emoji 👍🏽👨‍👩‍👧 and 日本語 and عربي",
            "numbers 1234567 3.14 ½ ٣",
            "code: fn f(x: u32) -> u32 { x << 2 }",
            "a special <|endoftext|> in the middle",
        ]
        .map(String::from),
    );
    texts
}

fn hf_ids(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false).unwrap().get_ids().to_vec()
}

fn check_same(ours: &Bpe, json: &str, pattern_name: &str) {
    let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    let mut differ = Vec::new();
    for text in texts() {
        let want = hf_ids(&hf, &text);
        let got = ours.encode(&text, Allowed::All).unwrap();
        if got != want {
            differ.push(format!("{text:?}\n  ours {got:?}\n  hf   {want:?}"));
        }
        assert_eq!(hf.decode(&got, false).unwrap(), text);
    }
    assert!(
        differ.is_empty(),
        "{pattern_name}: {} texts differ:\n{}",
        differ.len(),
        differ[..differ.len().min(3)].join("\n")
    );
}

#[test]
fn trained_tokenizer_json_encodes_identically_in_hf_tokenizers() {
    for (name, pattern) in [
        ("gpt2", pretokenize::GPT2),
        ("cl100k", pretokenize::CL100K),
        ("o200k", pretokenize::O200K),
    ] {
        let mut trainer = BpeTrainer::builder()
            .vocab_size(3000)
            .pattern(pattern)
            .build()
            .unwrap();
        trainer.feed(&crate::corpus_texts(200_000));
        let (bpe, _) = trainer.train().unwrap();
        check_same(&bpe, &bpe.to_tokenizer_json(), name);
    }
}

#[test]
fn gpt2_tokenizer_json_encodes_identically_in_hf_tokenizers() {
    let Some(gpt2) = crate::oracle::load("gpt2") else {
        return;
    };
    check_same(&gpt2, &gpt2.to_tokenizer_json(), "gpt2 vocabulary");
}

#[test]
fn we_read_what_hf_tokenizers_writes() {
    let mut trainer = BpeTrainer::builder().vocab_size(1000).build().unwrap();
    trainer.feed(&crate::corpus_texts(50_000));
    let (bpe, _) = trainer.train().unwrap();
    let hf = tokenizers::Tokenizer::from_bytes(bpe.to_tokenizer_json().as_bytes()).unwrap();
    // Recent `tokenizers` write merges as ["a", "b"] pairs.
    let written = hf.to_string(true).unwrap();
    let again = Bpe::from_tokenizer_json(written.as_bytes(), "hf.json").unwrap();
    for text in texts() {
        assert_eq!(
            again.encode(&text, Allowed::All).unwrap(),
            bpe.encode(&text, Allowed::All).unwrap()
        );
    }
}

#[test]
fn add_prefix_space_encodes_identically_in_hf_tokenizers() {
    let mut trainer = BpeTrainer::builder().vocab_size(1000).build().unwrap();
    trainer.feed(&crate::corpus_texts(50_000));
    let (bpe, _) = trainer.train().unwrap();
    let json = bpe
        .to_tokenizer_json()
        .replace("\"add_prefix_space\": false", "\"add_prefix_space\": true");
    let ours = Bpe::from_tokenizer_json(json.as_bytes(), "prefix.json").unwrap();
    let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    for text in texts() {
        assert_eq!(
            ours.encode(&text, Allowed::All).unwrap(),
            hf_ids(&hf, &text),
            "{text:?}"
        );
    }
}

/// Llama 3's form of tokenizer.json: its own pattern (a Split before a regex-less ByteLevel)
/// and `ignore_merges` (a piece that is a token is taken whole). Read from a file so written,
/// ours encodes as Hugging Face's does.
#[test]
fn llama3_style_files_encode_identically_in_hf_tokenizers() {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let mut trainer = BpeTrainer::builder()
        .vocab_size(3000)
        .pattern(pretokenize::CL100K)
        .build()
        .unwrap();
    trainer.feed(&crate::corpus_texts(200_000));
    let (bpe, _) = trainer.train().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&bpe.to_tokenizer_json()).unwrap();
    json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = LLAMA3.into();
    json["model"]["ignore_merges"] = true.into();
    let text = json.to_string();
    let ours = Bpe::from_tokenizer_json(text.as_bytes(), "llama3.json").unwrap();
    check_same(&ours, &text, "llama3");
}
