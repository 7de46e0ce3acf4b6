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

/// Runs `run` on `rounds` deterministic mutations of `seeds` (flipped bits, cut tails,
/// spliced seeds, overwritten bytes), so the fuzz target's body meets broken inputs in
/// every `cargo test`, not only under cargo-fuzz.
#[allow(dead_code)] // not every crate that includes this file mutates its seeds
pub fn mutate<R>(
    seeds: &[(&str, std::vec::Vec<u8>)],
    rounds: usize,
    mut run: impl FnMut(&[u8]) -> R,
) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..rounds {
        let (_, seed) = &seeds[round % seeds.len()];
        let mut b = seed.clone();
        match next() % 4 {
            0 => {
                for _ in 0..1 + next() % 8 {
                    let i = (next() as usize) % b.len();
                    b[i] ^= 1 << (next() % 8);
                }
            }
            1 => b.truncate((next() as usize) % (b.len() + 1)),
            2 => {
                let (_, other) = &seeds[(next() as usize) % seeds.len()];
                let cut = (next() as usize) % (other.len() + 1);
                b.extend_from_slice(&other[cut..]);
            }
            _ => {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
        }
        let _ = run(&b);
    }
}
