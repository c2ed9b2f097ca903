//! Property tests: GPT samples against the naive definition, and no panics on arbitrary input
//! for every file format the crate reads.

use std::sync::Arc;

use lmforge_dataset::PretrainingSampler;
use lmforge_dataset::labelled;
use lmforge_dataset::npy::{self, Elem};
use lmforge_dataset::padded::{self, Example, bert_example};
use lmforge_dataset::{
    Builder, DType, GptConfig, GptDataset, IndexedDataset, PadOptions, PadTo, Specials, SplitKind,
};
use proptest::prelude::*;

use crate::temp_dir;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Megatron's samples are windows of the documents concatenated in document-index order:
    /// unshuffled sample i is tokens i·s … i·s + s of that stream (one shared with the next
    /// sample), and the shuffle index is a permutation. Every document appears once per epoch.
    #[test]
    fn samples_are_windows_of_the_shuffled_stream(
        lengths in proptest::collection::vec(0usize..30, 1..20),
        seq in 2usize..16,
        num_samples in proptest::option::of(1u64..120),
        seed in any::<u32>(),
    ) {
        let total: usize = lengths.iter().sum();
        prop_assume!(total > 1);
        let dir = temp_dir("prop-gpt");
        let prefix = dir.join("g");
        let mut builder = Builder::create(&prefix, DType::U16).unwrap();
        let mut next = 0u32;
        for &n in &lengths {
            let ids: Vec<u32> = (0..n).map(|_| { next += 1; next }).collect();
            builder.add_document(&ids, if n == 0 { &[] } else { std::slice::from_ref(&n) }).unwrap();
        }
        builder.finish().unwrap();
        let data = Arc::new(IndexedDataset::open(&prefix).unwrap());
        let n = data.len();
        let ds = GptDataset::build(data.clone(), SplitKind::Train, 0..n, num_samples, GptConfig::new(seq, seed), None).unwrap();
        let epochs = ds.info().epochs;
        prop_assert_eq!(ds.document_index().len(), n * epochs);
        for d in 0..n as i32 {
            prop_assert_eq!(ds.document_index().iter().filter(|&&x| x == d).count(), epochs);
        }
        if let Some(wanted) = num_samples {
            prop_assert!(ds.len() as u64 >= wanted);
        }
        let mut perm = ds.shuffle_index().to_vec();
        perm.sort_unstable();
        prop_assert_eq!(perm, (0..ds.len() as u64).collect::<Vec<_>>());

        let stream: Vec<u32> = ds.document_index().iter().flat_map(|&d| data.get(d as usize).to_vec()).collect();
        let mut text = vec![0u32; seq + 1];
        for k in 0..ds.len() {
            let i = ds.shuffle_index()[k] as usize;
            let real = ds.text_into(k, &mut text);
            prop_assert_eq!(real, seq + 1);
            prop_assert_eq!(&text[..], &stream[i * seq..i * seq + seq + 1]);
        }
        let batch = ds.batch(&(0..ds.len()).collect::<Vec<_>>());
        for row in 0..ds.len() {
            let r = row * seq..(row + 1) * seq;
            prop_assert_eq!(&batch.tokens[r.start + 1..r.end], &batch.labels[r.start..r.end - 1]);
            prop_assert_eq!(&batch.position_ids[r.clone()], &(0..seq as u32).collect::<Vec<_>>()[..]);
            prop_assert!(batch.loss_mask[r].iter().all(|&m| m == 1.0));
        }
    }

    /// Same seed, same samples; the seed matters.
    #[test]
    fn seeded(lengths in proptest::collection::vec(5usize..30, 4..12), seed in any::<u32>()) {
        let dir = temp_dir("prop-seed");
        let prefix = dir.join("s");
        let mut builder = Builder::create(&prefix, DType::U16).unwrap();
        for &n in &lengths {
            builder.add_document(&vec![7; n], &[n]).unwrap();
        }
        builder.finish().unwrap();
        let data = Arc::new(IndexedDataset::open(&prefix).unwrap());
        let n = data.len();
        let build = |s| GptDataset::build(data.clone(), SplitKind::Train, 0..n, Some(50), GptConfig::new(4, s), None).unwrap();
        let (a, b) = (build(seed), build(seed));
        prop_assert_eq!(a.shuffle_index(), b.shuffle_index());
        prop_assert_eq!(a.document_index(), b.document_index());
    }

    /// .npy roundtrips, and arbitrary bytes are an error, never a panic.
    #[test]
    fn npy_files(values in proptest::collection::vec(any::<i32>(), 0..50),
                 junk in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = temp_dir("prop-npy");
        let path = dir.join("a.npy");
        let wide: Vec<i64> = values.iter().map(|&v| i64::from(v)).collect();
        std::fs::write(&path, npy::to_bytes(Elem::I32, &[wide.len()], &wide)).unwrap();
        prop_assert_eq!(npy::read(&path).unwrap(), (vec![wide.len()], wide));
        std::fs::write(&path, &junk).unwrap();
        let _ = npy::read(&path);
        let mut header = npy::to_bytes(Elem::I64, &[3], &[1, 2, 3]);
        let at = junk.len() % header.len();
        header[at] ^= junk.first().copied().unwrap_or(1);
        std::fs::write(&path, &header).unwrap();
        let _ = npy::read(&path);
    }

    /// BERT inputs fit the length, keep their specials and the texts' prefixes; padding gives
    /// every row the batch length and masks exactly the padding.
    #[test]
    fn bert_examples_and_padding(
        a in proptest::collection::vec(5u32..100, 0..40),
        b in proptest::option::of(proptest::collection::vec(5u32..100, 0..40)),
        max_length in 3usize..50,
        pad_id in 0u32..5,
        other in proptest::collection::vec(5u32..100, 0..60),
    ) {
        let specials = Specials { cls: 1, sep: 2 };
        let e = bert_example(&a, b.as_deref(), specials, max_length).unwrap();
        prop_assert!(e.ids.len() <= max_length);
        prop_assert_eq!(e.ids[0], 1);
        prop_assert_eq!(e.ids.iter().filter(|&&t| t == 2).count(), if b.is_some() { 2 } else { 1 });
        let first_sep = e.ids.iter().position(|&t| t == 2).unwrap();
        prop_assert_eq!(&e.ids[1..first_sep], &a[..first_sep - 1]);
        if e.ids.len() < max_length {
            prop_assert_eq!(e.ids.len(), a.len() + b.as_ref().map_or(0, |b| b.len() + 1) + 2, "no cut when it fits");
        }
        let f = Example { type_ids: vec![0; other.len()], ids: other };
        let batch = padded::pad(&[&e, &f], PadOptions { pad_id, pad_to: PadTo::Longest, multiple_of: Some(8) }).unwrap();
        prop_assert_eq!(batch.seq_length % 8, 0);
        for (row, ex) in [&e, &f].iter().enumerate() {
            let r = row * batch.seq_length..(row + 1) * batch.seq_length;
            prop_assert_eq!(&batch.ids[r.start..r.start + ex.ids.len()], &ex.ids[..]);
            prop_assert!(batch.ids[r.start + ex.ids.len()..r.end].iter().all(|&t| t == pad_id));
            prop_assert_eq!(batch.attention_mask[r].iter().sum::<u32>() as usize, ex.ids.len());
        }
    }

    /// Labelled-file readers: arbitrary bytes give examples or a file:line error.
    #[test]
    fn labelled_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = temp_dir("prop-labelled");
        let path = dir.join("x.tsv");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = labelled::read_text_classification(&path) {
            prop_assert!(e.to_string().contains("x.tsv"));
        }
        if let Err(e) = labelled::read_conll(&path) {
            prop_assert!(e.to_string().contains("x.tsv"));
        }
        if let Err(e) = labelled::read_token_classification(&path, &path) {
            prop_assert!(e.to_string().contains("x.tsv"));
        }
    }

    /// The ranks together read every sample once, in order, a whole step at a time; stopping
    /// anywhere and resuming from the consumed count reads what the uninterrupted run reads.
    #[test]
    fn sampler_covers_and_resumes(total in 1u64..400, micro in 1u64..9, ranks in 1u64..5, stop in 0usize..40) {
        let step = micro * ranks;
        let mut seen = Vec::new();
        let per_rank: Vec<Vec<Vec<usize>>> = (0..ranks)
            .map(|r| PretrainingSampler::new(total, 0, micro, r, ranks).unwrap().collect())
            .collect();
        for k in 0..per_rank[0].len() {
            for batches in &per_rank {
                seen.extend(batches[k].iter().copied());
            }
        }
        prop_assert_eq!(seen, (0..(total / step * step) as usize).collect::<Vec<_>>());
        for r in 0..ranks {
            let mut run = PretrainingSampler::new(total, 0, micro, r, ranks).unwrap();
            for _ in 0..stop {
                run.next();
            }
            if run.consumed() < total {
                let resumed = PretrainingSampler::new(total, run.consumed(), micro, r, ranks).unwrap();
                prop_assert!(run.eq(resumed));
            }
        }
    }
}
