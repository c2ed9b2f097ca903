//! Property tests: roundtrips, invariants, no panics on arbitrary input.

use std::sync::LazyLock;

use lmforge_bpe::{Allowed, Bpe, BpeTrainer};
use proptest::prelude::*;

/// A vocabulary trained on 300 KB of the embedded corpus.
static TRAINED: LazyLock<Bpe> = LazyLock::new(|| {
    let mut trainer = BpeTrainer::builder().vocab_size(2000).build().unwrap();
    trainer.feed(&crate::corpus_texts(100_000));
    trainer.train().unwrap().0
});

static GPT2: LazyLock<Option<Bpe>> = LazyLock::new(|| crate::oracle::load("gpt2"));

fn vocabularies() -> Vec<&'static Bpe> {
    let mut v = vec![&*TRAINED];
    v.extend(GPT2.as_ref());
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decode_inverts_encode_on_any_string(text in any::<String>()) {
        for bpe in vocabularies() {
            let ids = bpe.encode_ordinary(&text);
            prop_assert!(ids.iter().all(|&id| (id as usize) < bpe.vocab_size()));
            prop_assert_eq!(bpe.decode(&ids).unwrap(), text.clone());
            prop_assert_eq!(bpe.count(&text), ids.len());
            let all = bpe.encode(&text, Allowed::All).unwrap();
            prop_assert_eq!(bpe.decode(&all).unwrap(), text.clone());
        }
    }

    #[test]
    fn decode_inverts_encode_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for bpe in vocabularies() {
            let ids = bpe.encode_bytes(&bytes);
            prop_assert_eq!(bpe.decode_bytes(&ids).unwrap(), bytes.clone());
            // The stream decoder emits exactly what lossy decoding of the whole does.
            let mut stream = bpe.decode_stream();
            let mut out = String::new();
            for &id in &ids {
                out.push_str(&stream.step(id).unwrap());
            }
            out.push_str(&stream.finish());
            prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
            // Each token stands for bytes of its own (what bits per byte count): together,
            // the input's.
            let tokenizer: &dyn lmforge_tokenizer::Tokenizer = bpe;
            let joined: Vec<u8> = ids
                .iter()
                .flat_map(|&id| tokenizer.token_bytes(id).unwrap())
                .collect();
            prop_assert_eq!(joined, bytes.clone());
        }
    }

    #[test]
    fn special_tokens_survive_anywhere(prefix in any::<String>(), suffix in any::<String>()) {
        let bpe = &*TRAINED;
        let text = format!("{prefix}<|endoftext|>{suffix}");
        let ids = bpe.encode(&text, Allowed::All).unwrap();
        prop_assert!(ids.contains(&bpe.special_id("<|endoftext|>").unwrap()));
        prop_assert_eq!(bpe.decode(&ids).unwrap(), text.clone());
        prop_assert!(bpe.encode(&text, Allowed::None).is_err());
    }

    #[test]
    fn offsets_tile_the_input(text in any::<String>()) {
        let bpe = &*TRAINED;
        let enc = bpe.encode_with_offsets(&text, Allowed::All).unwrap();
        let mut at = 0;
        for &(s, e) in &enc.offsets {
            prop_assert_eq!(s, at);
            prop_assert!(e > s);
            at = e;
        }
        prop_assert_eq!(at, text.len());
    }

    #[test]
    fn training_never_panics_and_roundtrips(
        texts in prop::collection::vec(any::<String>(), 0..8),
        vocab in 257usize..400,
        min_frequency in 0u64..4,
    ) {
        let mut trainer = BpeTrainer::builder()
            .vocab_size(vocab)
            .min_frequency(min_frequency)
            .build()
            .unwrap();
        trainer.feed(&texts);
        match trainer.train() {
            Ok((bpe, report)) => {
                prop_assert!(bpe.vocab_size() <= vocab);
                prop_assert_eq!(report.vocab_size, bpe.vocab_size());
                for t in &texts {
                    let ids = bpe.encode_ordinary(t);
                    prop_assert!(ids.iter().all(|&id| (id as usize) < bpe.vocab_size()));
                    prop_assert_eq!(&bpe.decode(&ids).unwrap(), t);
                }
                // tokenizer.json roundtrip keeps every id.
                let again = Bpe::from_tokenizer_json(bpe.to_tokenizer_json().as_bytes(), "t.json").unwrap();
                for t in &texts {
                    prop_assert_eq!(again.encode_ordinary(t), bpe.encode_ordinary(t));
                }
            }
            Err(lmforge_bpe::Error::EmptyCorpus) => {
                prop_assert!(texts.iter().all(|t| t.replace("<|endoftext|>", "").is_empty()));
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
