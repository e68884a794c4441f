//! Stamps the git commit into the binaries (`outagectl --version`):
//! `OUTAGE_GIT_COMMIT` is the short hash of HEAD, or the variable of that
//! name when the build environment sets it (a source tarball has no .git),
//! else `unknown`. Re-run when HEAD moves (a commit, a checkout).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=OUTAGE_GIT_COMMIT");
    let commit = std::env::var("OUTAGE_GIT_COMMIT").ok().filter(|s| !s.trim().is_empty());
    let commit = commit.or_else(|| {
        // HEAD names the branch; the branch's ref (loose, or packed) and the
        // HEAD reflog move with every commit.
        if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
            let dir = std::path::Path::new(&dir);
            for f in ["HEAD", "logs/HEAD"] {
                if dir.join(f).exists() {
                    println!("cargo:rerun-if-changed={}", dir.join(f).display());
                }
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=OUTAGE_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
