//! Keeps a fuzz target's committed seed corpus (`fuzz/corpus/<target>/seed-*`) equal to the
//! seeds its engine's tests generate. Included with `#[path]` by those tests (which run on
//! the host with std). After changing the seeds:
//! `NANOVNF_WRITE_FUZZ_SEEDS=1 cargo test -p <crate> committed_seed_corpus`, then commit
//! the files with `git add -f` (the root .gitignore ignores /fuzz/corpus).

extern crate std;

use std::path::Path;

/// Checks (or, with `NANOVNF_WRITE_FUZZ_SEEDS` set, writes) every seed of `target`;
/// `krate` names the crate whose test regenerates them.
pub fn check(target: &str, krate: &str, seeds: &[(&str, std::vec::Vec<u8>)]) {
    let write = std::env::var_os("NANOVNF_WRITE_FUZZ_SEEDS").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        let path = dir.join(std::format!("seed-{name}"));
        if write {
            std::fs::write(&path, bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == *bytes,
            "{} is missing or stale: regenerate it with `NANOVNF_WRITE_FUZZ_SEEDS=1 cargo test \
             -p {krate} committed_seed_corpus` and commit it (git add -f: the root \
             .gitignore ignores /fuzz/corpus)",
            path.display()
        );
    }
}
