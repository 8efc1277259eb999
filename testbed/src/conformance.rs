//! libiscsi's conformance suite (`iscsi-test-cu`) against one URL,
//! summarised per test by `scripts/cu_summary.py` (the counting rule
//! `scripts/conformance.sh` uses: a test is clean, skipped or failed by
//! CUnit's verdict). Shared by the regression gates of the file/memory LUN
//! and of the RBD LUN, so both count the same way.

use std::path::PathBuf;
use std::process::Command;

/// The counts of one run, with the failed tests' names and the log.
#[derive(Debug, Clone)]
pub struct CuSummary {
    pub tests: u32,
    pub clean: u32,
    pub skipped: u32,
    pub failed: u32,
    /// The failed tests, one per line (empty when none failed).
    pub failed_list: String,
    /// The full `iscsi-test-cu -v` log, kept for a failing run.
    pub log: PathBuf,
}

impl std::fmt::Display for CuSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tests {} clean {} skipped {} failed {} (log: {})",
            self.tests,
            self.clean,
            self.skipped,
            self.failed,
            self.log.display()
        )
    }
}

/// Whether `iscsi-test-cu` (Debian's libiscsi-bin) is installed.
pub fn available() -> bool {
    Command::new("iscsi-test-cu").arg("--help").output().is_ok()
}

/// Runs the whole suite (`-d -S -v`, bounded by `timeout_secs`) against
/// `url` and summarises it; `name` tells concurrent runs' logs apart.
pub fn run(url: &str, name: &str, timeout_secs: u32) -> Result<CuSummary, String> {
    let log = std::env::temp_dir().join(format!("iscsi-test-cu-{name}-{}.log", std::process::id()));
    let out = Command::new("timeout")
        .args([
            &timeout_secs.to_string(),
            "iscsi-test-cu",
            "-d",
            "-S",
            "-v",
            url,
        ])
        .output()
        .map_err(|e| format!("run iscsi-test-cu: {e} (install libiscsi-bin)"))?;
    std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())
        .map_err(|e| format!("write {}: {e}", log.display()))?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cu_summary.py");
    let summarise = |extra: &[&str]| -> Result<String, String> {
        let o = Command::new("python3")
            .arg(script)
            .arg(&log)
            .args(extra)
            .output()
            .map_err(|e| format!("run cu_summary.py: {e}"))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let counts = summarise(&[])?;
    let words: Vec<&str> = counts.split_whitespace().collect();
    let field = |name: &str| -> Result<u32, String> {
        let i = words.iter().position(|w| *w == name).ok_or_else(|| {
            format!(
                "no {name} in the summary {counts:?} (log {})",
                log.display()
            )
        })?;
        words
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad count for {name} in {counts:?}"))
    };
    Ok(CuSummary {
        tests: field("tests")?,
        clean: field("clean")?,
        skipped: field("skipped")?,
        failed: field("failed")?,
        failed_list: summarise(&["--list", "failed"])?,
        log,
    })
}
