//! A stable initiator name (RFC 7143 §4.2.7.1: "the iSCSI name ... must be
//! unique and persistent"), generated once and stored, in the spirit of
//! open-iscsi's `/etc/iscsi/initiatorname.iscsi`.
//!
//! Lookup order: `$XDG_CONFIG_HOME/iscsi-rs/initiatorname` when that variable
//! is set; otherwise `/etc/iscsi-rs/initiatorname` then
//! `~/.config/iscsi-rs/initiatorname`. The first existing file wins; when none
//! exists a name is generated and stored in the first writable location. If
//! nothing is writable the generated name is used for this run only.

use std::path::PathBuf;

use rand::Rng;

/// File name inside the configuration directory.
pub const FILE_NAME: &str = "initiatorname";

/// Candidate files, most preferred first.
pub fn candidate_paths() -> Vec<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(x).join("iscsi-rs").join(FILE_NAME)];
    }
    let mut v = vec![PathBuf::from("/etc/iscsi-rs").join(FILE_NAME)];
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        v.push(PathBuf::from(home).join(".config/iscsi-rs").join(FILE_NAME));
    }
    v
}

/// Generate a fresh IQN: `iqn.2026-01.rs.iscsi-rs:<host>-<random hex>`.
pub fn generate() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| sanitize(h.trim()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let r: u64 = rand::thread_rng().gen();
    format!(
        "iqn.2026-01.rs.iscsi-rs:{host}-{:012x}",
        r & 0xffff_ffff_ffff
    )
}

/// Lower-case and keep only characters allowed in an IQN (RFC 3722 subset).
fn sanitize(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            let c = c.to_ascii_lowercase();
            (c.is_ascii_alphanumeric() || c == '-' || c == '.').then_some(c)
        })
        .take(64)
        .collect()
}

/// Parse the stored file: the first non-comment line, optionally written as
/// `InitiatorName=iqn...` like open-iscsi's file.
fn parse_file(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.strip_prefix("InitiatorName=")
                .unwrap_or(l)
                .trim()
                .to_string()
        })
        .find(|l| !l.is_empty())
}

/// The initiator name to use: `explicit` if given, else the stored one,
/// else a newly generated (and, when possible, stored) one.
pub fn resolve(explicit: Option<&str>) -> String {
    if let Some(n) = explicit {
        return n.to_string();
    }
    resolve_in(&candidate_paths())
}

/// [`resolve`] over an explicit candidate list (for tests).
pub fn resolve_in(paths: &[PathBuf]) -> String {
    for p in paths {
        if let Some(n) = std::fs::read_to_string(p)
            .ok()
            .as_deref()
            .and_then(parse_file)
        {
            return n;
        }
    }
    let name = generate();
    for p in paths {
        let ok = p
            .parent()
            .map(|d| std::fs::create_dir_all(d).is_ok())
            .unwrap_or(true)
            && std::fs::write(p, format!("InitiatorName={name}\n")).is_ok();
        if ok {
            tracing::info!(path = %p.display(), %name, "stored new initiator name");
            return name;
        }
    }
    tracing::warn!(%name, "could not store the initiator name; using it for this run only");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_iqns_and_differ() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with("iqn.2026-01.rs.iscsi-rs:"), "{a}");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c)),
            "{a}"
        );
    }

    #[test]
    fn generated_then_stable() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![
            dir.path().join("ro/x/initiatorname"),
            dir.path().join("b/initiatorname"),
        ];
        // Make the first candidate unwritable by putting a file where its directory should be.
        std::fs::write(dir.path().join("ro"), b"not a dir").unwrap();
        let first = resolve_in(&paths);
        assert!(paths[1].exists());
        let second = resolve_in(&paths);
        assert_eq!(first, second);
    }

    #[test]
    fn parses_open_iscsi_style_and_comments() {
        assert_eq!(
            parse_file("# c\n\nInitiatorName=iqn.x:y\n").as_deref(),
            Some("iqn.x:y")
        );
        assert_eq!(parse_file("iqn.a:b").as_deref(), Some("iqn.a:b"));
        assert_eq!(parse_file("# only\n"), None);
    }

    #[test]
    fn explicit_wins() {
        assert_eq!(resolve(Some("iqn.1.x:z")), "iqn.1.x:z");
    }
}
