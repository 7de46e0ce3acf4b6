//! Builds the appliance images (`images/src/bin/*`) for `x86_64-unknown-none` in release
//! (size-optimised, LTO, `panic = "abort"`, stripped) and finds them for the launcher,
//! the tests and the benchmarks. Images go to their own target directory so that a build
//! started from inside `cargo test` never waits on the outer cargo's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every appliance image, by binary name.
pub const IMAGES: &[&str] = &[
    "ping", "dhcp", "metadata", "router", "vxlan", "wire", "floor",
];
pub const TARGET: &str = "x86_64-unknown-none";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cargo could not be started (is Rust installed? see README)")]
    Cargo(#[source] std::io::Error),
    #[error(
        "the {TARGET} target is not installed: run `rustup target add {TARGET}` \
         (README's first command does it)"
    )]
    TargetMissing,
    #[error("building the appliance images failed:\n{stderr}")]
    Failed { stderr: String },
    #[error("image {name} was not produced at {path}")]
    Missing { name: String, path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: &'static str,
    pub path: PathBuf,
    pub size: u64,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Where images are built.
pub fn target_dir() -> PathBuf {
    std::env::var_os("NANOVNF_IMAGE_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/images"))
}

/// The path of image `name` (built or not).
pub fn image_path(name: &str) -> PathBuf {
    target_dir().join(TARGET).join("release").join(name)
}

/// Builds every image (incrementally: a no-op when nothing changed) and returns them.
pub fn build_all() -> Result<Vec<Image>, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            "nanovnf-images",
        ])
        .env("CARGO_TARGET_DIR", target_dir())
        // Flags meant for host builds (coverage, sanitizers) must not leak into images.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for name in IMAGES {
        cmd.args(["--bin", name]);
    }
    let out = cmd.output().map_err(BuildError::Cargo)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("can't find crate for `core`")
            || stderr.contains("target may not be installed")
        {
            return Err(BuildError::TargetMissing);
        }
        return Err(BuildError::Failed { stderr });
    }
    IMAGES
        .iter()
        .map(|&name| {
            let path = image_path(name);
            let size = std::fs::metadata(&path)
                .map_err(|_| BuildError::Missing {
                    name: name.into(),
                    path: path.clone(),
                })?
                .len();
            Ok(Image { name, path, size })
        })
        .collect()
}
