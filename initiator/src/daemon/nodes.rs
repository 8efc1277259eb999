//! The node database: one JSON file per (target, portal) under
//! `<state-dir>/nodes/`, like open-iscsi's `/etc/iscsi/nodes`. Discovery
//! records nodes; `iscsi node update` changes their settings; the daemon
//! reads them at login (and logs in to `startup: automatic` ones when it
//! starts).
//!
//! Files are written atomically ([`ctlsock::save_atomic`]: temporary file,
//! fsync, rename, directory fsync) with mode 0600 in a 0700 directory:
//! they hold CHAP secrets, readable by the owner only. Unknown keys are
//! refused on load, so a typo in a hand-edited file is an error, not a
//! silently ignored setting.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::portal::Portal;
use crate::session::{ChapConfig, SessionConfig};

/// open-iscsi's `node.session.timeo.replacement_timeout` default (seconds).
pub const DEFAULT_REPLACEMENT_TIMEOUT: u64 = 120;
/// Most connections per session we ask for (the target may allow fewer).
pub const MAX_CONNECTIONS: u16 = 16;
/// Largest node file we read.
const MAX_NODE_FILE: u64 = 64 * 1024;

/// When the daemon logs in to a node by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Startup {
    /// Only on `iscsi login --target`.
    #[default]
    Manual,
    /// Also when the daemon starts and on `iscsi login --all`.
    Automatic,
}

impl std::str::FromStr for Startup {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "manual" => Ok(Startup::Manual),
            "automatic" | "auto" => Ok(Startup::Automatic),
            _ => Err(format!("startup must be manual or automatic, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Startup::Manual => "manual",
            Startup::Automatic => "automatic",
        })
    }
}

/// A CHAP name and secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Parse `USER:SECRET` (the secret may contain colons).
    pub fn parse(s: &str, what: &str) -> Result<Credentials> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(Credentials {
                user: u.to_string(),
                secret: p.to_string(),
            }),
            _ => Err(Error::Usage(format!("{what} must be USER:SECRET"))),
        }
    }
}

fn default_connections() -> u16 {
    1
}

fn default_replacement_timeout() -> u64 {
    DEFAULT_REPLACEMENT_TIMEOUT
}

/// One node record: a target reached through one portal, and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Target IQN (as discovered).
    pub target: String,
    /// `HOST:PORT` (`[V6]:PORT`).
    pub portal: String,
    /// Portal group tag from SendTargets, when discovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpgt: Option<u16>,
    #[serde(default)]
    pub startup: Startup,
    /// Connections per session (MC/S), capped by the target.
    #[serde(default = "default_connections")]
    pub connections: u16,
    /// Where the session's NBD exports listen (`HOST:PORT` or `unix:PATH`);
    /// unset: 127.0.0.1:10809 if free, else the next free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd: Option<String>,
    /// Seconds a lost session may take to recover before NBD requests fail
    /// with EIO (open-iscsi's replacement_timeout).
    #[serde(default = "default_replacement_timeout")]
    pub replacement_timeout: u64,
    /// CHAP: the target authenticates us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<Credentials>,
    /// Mutual CHAP: we authenticate the target (needs `chap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap: Option<Credentials>,
    /// Request CRC32C header and data digests.
    #[serde(default)]
    pub digests: bool,
    /// Control-channel tag (1..=7) of every WRITE of the session's block
    /// I/O (docs/control-channel.md); unset: untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_writes: Option<u8>,
    /// Control-channel tag (1..=7) of every READ; unset: untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_reads: Option<u8>,
}

impl Node {
    /// A record with default settings.
    pub fn new(target: &str, portal: &Portal) -> Node {
        Node {
            target: target.to_string(),
            portal: portal.to_string(),
            tpgt: None,
            startup: Startup::Manual,
            connections: 1,
            nbd: None,
            replacement_timeout: DEFAULT_REPLACEMENT_TIMEOUT,
            chap: None,
            mutual_chap: None,
            digests: false,
            tag_writes: None,
            tag_reads: None,
        }
    }

    /// The tags of the session's reads and writes.
    pub fn io_tags(&self) -> Result<crate::IoTags> {
        crate::IoTags::new(self.tag_reads, self.tag_writes)
    }

    /// Check the settings (bad values are usage errors naming the setting).
    pub fn validate(&self) -> Result<()> {
        proto::name::IscsiName::parse(&self.target)
            .map_err(|e| Error::Usage(format!("target {:?}: {e}", self.target)))?;
        Portal::parse(&self.portal)?;
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(Error::Usage(format!(
                "connections must be 1..={MAX_CONNECTIONS}, not {}",
                self.connections
            )));
        }
        if self.replacement_timeout > 24 * 3600 {
            return Err(Error::Usage(
                "replacement_timeout is at most 86400 seconds".into(),
            ));
        }
        if self.tag_writes == Some(0) || self.tag_reads == Some(0) {
            return Err(Error::Usage(
                "a tag is 1..=7; untagged is no tag (`--tag-writes none`)".into(),
            ));
        }
        self.io_tags()?;
        if self.mutual_chap.is_some() && self.chap.is_none() {
            return Err(Error::Usage("mutual CHAP needs CHAP (set --chap)".into()));
        }
        for c in self.chap.iter().chain(self.mutual_chap.iter()) {
            if c.user.is_empty() || c.secret.is_empty() {
                return Err(Error::Usage(
                    "CHAP user and secret must not be empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// The session configuration this node asks for.
    pub fn session_config(&self, initiator_name: &str) -> Result<SessionConfig> {
        let portal = Portal::parse(&self.portal)?;
        let mut cfg = SessionConfig::new(portal, self.target.clone(), initiator_name);
        cfg.connections = self.connections.max(1);
        cfg.offer.header_digest = self.digests;
        cfg.offer.data_digest = self.digests;
        cfg.recovery_timeout = Duration::from_secs(self.replacement_timeout);
        cfg.io_tags = self.io_tags()?;
        cfg.chap = self.chap.as_ref().map(|c| ChapConfig {
            user: c.user.clone(),
            secret: c.secret.as_bytes().to_vec(),
            mutual: self
                .mutual_chap
                .as_ref()
                .map(|m| (m.user.clone(), m.secret.as_bytes().to_vec())),
            algorithms: Vec::new(),
        });
        Ok(cfg)
    }

    /// Same target (IQNs compare case-insensitively) and same portal.
    pub fn is(&self, target: &str, portal: Option<&str>) -> bool {
        self.target.eq_ignore_ascii_case(target)
            && portal.is_none_or(|p| same_portal(&self.portal, p))
    }
}

/// Portals compare by parsed host and port (`h` equals `h:3260`).
pub fn same_portal(a: &str, b: &str) -> bool {
    match (Portal::parse(a), Portal::parse(b)) {
        (Ok(a), Ok(b)) => a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port,
        _ => a == b,
    }
}

/// Changes requested by `iscsi node update` (unset fields stay as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u16>,
    /// `Some(None)` clears the NBD address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement_timeout: Option<u64>,
    /// `Some(None)` turns CHAP (and mutual CHAP) off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<Option<Credentials>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap: Option<Option<Credentials>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<bool>,
    /// `Some(None)` untags writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_writes: Option<Option<u8>>,
    /// `Some(None)` untags reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_reads: Option<Option<u8>>,
}

impl NodeUpdate {
    /// Apply to `n` (the caller validates the result).
    pub fn apply(&self, n: &mut Node) {
        if let Some(v) = self.startup {
            n.startup = v;
        }
        if let Some(v) = self.connections {
            n.connections = v;
        }
        if let Some(v) = &self.nbd {
            n.nbd = v.clone();
        }
        if let Some(v) = self.replacement_timeout {
            n.replacement_timeout = v;
        }
        if let Some(v) = &self.chap {
            n.chap = v.clone();
            if v.is_none() {
                n.mutual_chap = None;
            }
        }
        if let Some(v) = &self.mutual_chap {
            n.mutual_chap = v.clone();
        }
        if let Some(v) = self.digests {
            n.digests = v;
        }
        if let Some(v) = self.tag_writes {
            n.tag_writes = v;
        }
        if let Some(v) = self.tag_reads {
            n.tag_reads = v;
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == NodeUpdate::default()
    }
}

/// The node files under one state directory.
#[derive(Debug, Clone)]
pub struct NodeDb {
    dir: PathBuf,
}

/// File-name-safe form of a (target, portal) key: characters other than
/// `[A-Za-z0-9.:-]` are written `%XX`, so distinct keys never share a file.
fn file_name(target: &str, portal: &str) -> String {
    let mut s = String::new();
    for b in target
        .to_ascii_lowercase()
        .bytes()
        .chain(std::iter::once(b','))
        .chain(portal.to_ascii_lowercase().bytes())
    {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-') || b == b',' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.push_str(".json");
    s
}

impl NodeDb {
    /// The database under `<state_dir>/nodes` (created on first write).
    pub fn new(state_dir: &Path) -> NodeDb {
        NodeDb {
            dir: state_dir.join("nodes"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record of (target, portal) lives.
    pub fn path_of(&self, target: &str, portal: &str) -> PathBuf {
        let canon = Portal::parse(portal)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| portal.to_string());
        self.dir.join(file_name(target, &canon))
    }

    fn io(&self, what: &str, path: &Path, e: io::Error) -> Error {
        Error::Usage(format!("node database: {what} {}: {e}", path.display()))
    }

    /// Every node, sorted by target then portal. Unreadable files are
    /// reported, not skipped silently.
    pub fn list(&self) -> Result<Vec<Node>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io("cannot read", &self.dir, e)),
        };
        let mut nodes = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| self.io("cannot read", &self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            nodes.push(self.load(&entry.path())?);
        }
        nodes.sort_by(|a, b| {
            (a.target.to_ascii_lowercase(), &a.portal)
                .cmp(&(b.target.to_ascii_lowercase(), &b.portal))
        });
        Ok(nodes)
    }

    fn load(&self, path: &Path) -> Result<Node> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| self.io("cannot open", path, e))?;
        let mut text = String::new();
        f.take(MAX_NODE_FILE)
            .read_to_string(&mut text)
            .map_err(|e| self.io("cannot read", path, e))?;
        let n: Node = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "node file {}: {e}; fix or delete it (`iscsi node delete`)",
                path.display()
            ))
        })?;
        n.validate()
            .map_err(|e| Error::Usage(format!("node file {}: {e}", path.display())))?;
        Ok(n)
    }

    /// Nodes of `target`, optionally only the one at `portal`.
    pub fn find(&self, target: &str, portal: Option<&str>) -> Result<Vec<Node>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|n| n.is(target, portal))
            .collect())
    }

    /// Exactly one node, or a usage error saying how to pick or create one.
    pub fn get(&self, target: &str, portal: Option<&str>) -> Result<Node> {
        let mut found = self.find(target, portal)?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::Usage(format!(
                "no node record for {target}{}; run `iscsi discover --portal HOST` first \
                 (or give --portal to login)",
                portal.map(|p| format!(" at {p}")).unwrap_or_default()
            ))),
            n => Err(Error::Usage(format!(
                "{target} has {n} node records ({}); pick one with --portal",
                found
                    .iter()
                    .map(|n| n.portal.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Write `node` (validated), replacing a record with the same key.
    pub fn save(&self, node: &Node) -> Result<PathBuf> {
        node.validate()?;
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| self.io("cannot create", &self.dir, e))?;
        }
        let path = self.path_of(&node.target, &node.portal);
        let mut text = serde_json::to_string_pretty(node)
            .map_err(|e| Error::Usage(format!("node record: {e}")))?;
        text.push('\n');
        ctlsock::save_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| self.io("cannot write", &path, e))?;
        Ok(path)
    }

    /// Record a discovered (target, portal): a new record with defaults, or
    /// the existing one with its settings kept (only the TPGT refreshed).
    /// Returns the record and whether it was new.
    pub fn record_discovered(&self, target: &str, portal: &str, tpgt: u16) -> Result<(Node, bool)> {
        let p = Portal::parse(portal)?;
        match self.find(target, Some(portal))?.into_iter().next() {
            Some(mut n) => {
                if n.tpgt != Some(tpgt) {
                    n.tpgt = Some(tpgt);
                    self.save(&n)?;
                }
                Ok((n, false))
            }
            None => {
                let mut n = Node::new(target, &p);
                n.tpgt = Some(tpgt);
                self.save(&n)?;
                Ok((n, true))
            }
        }
    }

    /// Apply `update` to the matching nodes (all portals of `target` when
    /// `portal` is None) and return them as saved.
    pub fn update(
        &self,
        target: &str,
        portal: Option<&str>,
        update: &NodeUpdate,
    ) -> Result<Vec<Node>> {
        let nodes = self.find(target, portal)?;
        if nodes.is_empty() {
            self.get(target, portal)?;
        }
        let mut out = Vec::new();
        for mut n in nodes {
            update.apply(&mut n);
            n.validate()?;
            out.push(n);
        }
        for n in &out {
            self.save(n)?;
        }
        Ok(out)
    }

    /// Delete the matching nodes; returns them.
    pub fn delete(&self, target: &str, portal: Option<&str>) -> Result<Vec<Node>> {
        let nodes = self.find(target, portal)?;
        if nodes.is_empty() {
            self.get(target, portal)?;
        }
        for n in &nodes {
            let p = self.path_of(&n.target, &n.portal);
            std::fs::remove_file(&p).map_err(|e| self.io("cannot delete", &p, e))?;
        }
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const T: &str = "iqn.2024-01.org.example:disk1";

    #[test]
    fn discovered_nodes_are_private_files_that_keep_settings() {
        let d = tempfile::tempdir().unwrap();
        let db = NodeDb::new(d.path());
        assert!(db.list().unwrap().is_empty());
        let (n, new) = db.record_discovered(T, "127.0.0.1:3260", 1).unwrap();
        assert!(new);
        assert_eq!(n.replacement_timeout, 120);
        let path = db.path_of(T, "127.0.0.1");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(db.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let up = NodeUpdate {
            startup: Some(Startup::Automatic),
            chap: Some(Some(Credentials::parse("u:s3cret:x", "chap").unwrap())),
            ..NodeUpdate::default()
        };
        db.update(T, None, &up).unwrap();
        // Rediscovery keeps the settings.
        let (n, new) = db.record_discovered(T, "127.0.0.1", 1).unwrap();
        assert!(!new);
        assert_eq!(n.startup, Startup::Automatic);
        assert_eq!(n.chap.as_ref().unwrap().secret, "s3cret:x");
        assert!(!format!("{n:?}").contains("s3cret"));
        let cfg = n.session_config("iqn.2024-01.org.example:me").unwrap();
        assert_eq!(cfg.recovery_timeout, Duration::from_secs(120));
        assert_eq!(cfg.chap.unwrap().secret, b"s3cret:x");
        // A second portal, then ambiguity.
        db.record_discovered(T, "[::1]:3261", 1).unwrap();
        assert_eq!(db.list().unwrap().len(), 2);
        assert!(db
            .get(T, None)
            .unwrap_err()
            .to_string()
            .contains("--portal"));
        assert_eq!(db.get(T, Some("[::1]:3261")).unwrap().portal, "[::1]:3261");
        assert_eq!(db.delete(T, Some("127.0.0.1:3260")).unwrap().len(), 1);
        assert_eq!(db.list().unwrap().len(), 1);
        assert!(db.delete(T, Some("127.0.0.1")).is_err());
    }

    #[test]
    fn bad_settings_and_bad_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let db = NodeDb::new(d.path());
        db.record_discovered(T, "127.0.0.1", 1).unwrap();
        for up in [
            NodeUpdate {
                connections: Some(0),
                ..NodeUpdate::default()
            },
            NodeUpdate {
                mutual_chap: Some(Some(Credentials::parse("a:b", "m").unwrap())),
                ..NodeUpdate::default()
            },
            NodeUpdate {
                tag_writes: Some(Some(8)),
                ..NodeUpdate::default()
            },
        ] {
            assert!(db.update(T, None, &up).is_err(), "{up:?}");
        }
        assert_eq!(db.get(T, None).unwrap().connections, 1);
        assert!(db.record_discovered("not a name", "127.0.0.1", 1).is_err());
        std::fs::write(db.dir().join("junk.json"), b"{\"target\": 1, \"x\": [").unwrap();
        let e = db.list().unwrap_err().to_string();
        assert!(e.contains("junk.json"), "{e}");
    }

    /// The tags are node settings: saved, cleared, and in the session's
    /// configuration.
    #[test]
    fn io_tags_are_node_settings() {
        let d = tempfile::tempdir().unwrap();
        let db = NodeDb::new(d.path());
        db.record_discovered(T, "127.0.0.1", 1).unwrap();
        let up = NodeUpdate {
            tag_writes: Some(Some(6)),
            tag_reads: Some(Some(2)),
            ..NodeUpdate::default()
        };
        db.update(T, None, &up).unwrap();
        let n = db.get(T, None).unwrap();
        let cfg = n.session_config("iqn.2024-01.org.example:me").unwrap();
        assert_eq!(cfg.io_tags, crate::IoTags::new(Some(2), Some(6)).unwrap());
        let text = std::fs::read_to_string(db.path_of(T, "127.0.0.1")).unwrap();
        assert!(text.contains("\"tag_writes\": 6"), "{text}");
        let clear = NodeUpdate {
            tag_reads: Some(None),
            ..NodeUpdate::default()
        };
        let n = db.update(T, None, &clear).unwrap().remove(0);
        assert_eq!((n.tag_writes, n.tag_reads), (Some(6), None));
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(
            file_name("iqn.a:b", "[::1]:3260"),
            "iqn.a:b,%5B::1%5D:3260.json"
        );
        assert_ne!(file_name("iqn.a/b", "x"), file_name("iqn.a_b", "x"));
        assert!(!file_name("../../etc", "x").contains('/'));
    }
}
