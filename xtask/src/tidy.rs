//! Repository rules as tests (rust-analyzer's `tidy.rs`): they fail when the tree drifts from
//! what docs/ARCHITECTURE.md promises.

use std::fs;
use std::path::Path;

use crate::project_root;

#[test]
fn every_crate_root_has_a_doc_comment() {
    let root = project_root();
    let mut roots = vec![root.join("xtask/src/main.rs")];
    for entry in fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        roots.extend(
            ["lib.rs", "main.rs"]
                .map(|f| src.join(f))
                .into_iter()
                .filter(|p| p.exists()),
        );
    }
    for path in roots {
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} must open with a `//!` doc",
            path.display()
        );
    }
}

#[test]
fn every_crate_is_in_the_architecture_document() {
    let root = project_root();
    let architecture = fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    for entry in fs::read_dir(root.join("crates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            architecture.contains(&format!("`crates/{name}`")),
            "docs/ARCHITECTURE.md does not describe `crates/{name}`"
        );
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let root = project_root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let ci = fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        readme.contains("cargo xtask test"),
        "README.md must show `cargo xtask test`"
    );
    assert!(
        ci.contains("cargo xtask test"),
        ".ci/run must call `cargo xtask test`"
    );
}

#[test]
fn committed_datasets_match_their_checksums() {
    crate::dataset::verify_checksums(&project_root().join("datasets")).unwrap();
}

#[test]
fn no_file_left_behind_by_an_interrupted_write() {
    let root = project_root();
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "tmp") {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(&root.join("datasets"), &mut found);
    assert!(found.is_empty(), "temporary files in datasets/: {found:?}");
}
