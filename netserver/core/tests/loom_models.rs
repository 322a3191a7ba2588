//! Runs the loom model tests (tests/loom.rs) as part of the normal test run: they need the whole
//! crate compiled with `--cfg loom`, so this builds it in a separate target directory
//! (`target/loom`) and runs `cargo test --test loom` there:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p netserver-core --test loom
//! ```

#![cfg(not(loom))]

use std::path::Path;
use std::process::Command;

#[test]
fn loom_models_pass() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().and_then(Path::parent).expect("workspace root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args(["test", "-p", "netserver-core", "--test", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", workspace.join("target").join("loom"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo for the loom models");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loom models failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("6 passed"), "expected the 6 loom models to run:\n{stdout}");
}
