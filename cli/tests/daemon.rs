//! Node records end to end: `iscsi discover` against our target records
//! nodes as private files; `iscsi node` verbs edit them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testbed::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_iscsi");
const TARGET: &str = "iqn.2026-01.rs.iscsi-rs:test-daemon";

/// A state directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    /// Run `iscsi ARGS --state-dir DIR`.
    fn iscsi(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(self.state())
            .env("XDG_CONFIG_HOME", self.state().join("config"))
            .stdin(Stdio::null())
            .output()
            .expect("run iscsi")
    }

    /// Run and require success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.iscsi(args);
        assert!(
            o.status.success(),
            "iscsi {args:?} failed ({:?}): {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr),
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}

/// Our target on `portal` (port 0: any), LUNs as given.
fn serve(portal: &str, luns: &[&str]) -> ServerProcess {
    let mut c = Command::new(BIN);
    c.args([
        "target", "serve", "--portal", portal, "--target", TARGET, "--log", "warn",
    ]);
    for l in luns {
        c.args(["--lun", l]);
    }
    ServerProcess::spawn(c, "listening on", Duration::from_secs(10)).expect("target starts")
}

#[test]
fn discover_records_private_nodes_and_node_verbs_edit_them() {
    let t = serve("127.0.0.1:0", &["mem:8M"]);
    let portal = t.addr().expect("address").to_string();
    let env = Env::new();
    env.ok(&["discover", "--portal", &portal]);
    let nodes = env.state().join("nodes");
    let files: Vec<_> = std::fs::read_dir(&nodes).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files[0].path()), 0o600);
    assert_eq!(mode(&nodes), 0o700);
    let list = env.json(&["node", "list", "--json"]);
    assert_eq!(list[0]["target"], TARGET);
    assert_eq!(list[0]["portal"], portal.as_str());
    assert_eq!(list[0]["startup"], "manual");
    assert_eq!(list[0]["replacement_timeout"], 120);

    env.ok(&[
        "node",
        "update",
        "--target",
        TARGET,
        "--chap",
        "alice:secret12chars",
        "--mutual-chap",
        "tgt:othersecret12",
        "--connections",
        "2",
        "--startup",
        "automatic",
        "--replacement-timeout",
        "30",
        "--nbd",
        "127.0.0.1:0",
    ]);
    let show = env.ok(&["node", "show", "--target", TARGET]);
    assert!(show.contains("alice (secret set)"), "{show}");
    assert!(!show.contains("secret12chars"), "secret printed: {show}");
    let j = env.json(&["node", "show", "--target", TARGET, "--json"]);
    assert_eq!(j[0]["connections"], 2);
    assert_eq!(j[0]["startup"], "automatic");
    assert_eq!(j[0]["replacement_timeout"], 30);
    assert!(!j.to_string().contains("secret12chars"));
    // The file holds the secret (owner-only), and is still 0600 after the
    // atomic rewrite.
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(text.contains("secret12chars"));
    assert_eq!(mode(&files[0].path()), 0o600);
    // Rediscovery keeps the settings.
    env.ok(&["discover", "--portal", &portal]);
    assert_eq!(env.json(&["node", "list", "--json"])[0]["connections"], 2);

    // Bad values: usage errors (exit 2), nothing changed.
    let o = env.iscsi(&["node", "update", "--target", TARGET, "--connections", "0"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = env.iscsi(&[
        "node",
        "update",
        "--target",
        "iqn.2026-01.x:none",
        "--startup",
        "manual",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("iscsi discover"),
        "{o:?}"
    );
    env.ok(&["node", "update", "--target", TARGET, "--no-chap"]);
    assert!(env.json(&["node", "show", "--target", TARGET, "--json"])[0]["mutual_chap"].is_null());

    env.ok(&["node", "delete", "--target", TARGET]);
    assert_eq!(env.json(&["node", "list", "--json"]), serde_json::json!([]));
}
