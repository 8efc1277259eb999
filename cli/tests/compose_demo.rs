//! The compose demo end to end (`scripts/compose-demo.sh`, issue 11): static
//! binaries, a FROM scratch image, target + discovery + initiator (CHAP,
//! two connections, NBD published on the host) + the `check` service (the
//! `nbd` crate's client writes and verifies 64 MiB), then `nbdinfo` from the
//! host on the published port, then `--down`; then the two-network MC/S
//! variant (`--mcs`: one connection per portal, one network disconnected
//! mid-copy, the copy audited). Skips with a clear line where no Docker
//! engine or Compose is reachable.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn docker_ready() -> Result<(), String> {
    if !ok(Command::new("docker").arg("info")) {
        return Err("no Docker engine reachable (`docker info` failed)".into());
    }
    let v2 = ok(Command::new("docker").args(["compose", "version"]));
    if !v2 && !ok(Command::new("docker-compose").arg("version")) {
        return Err("neither `docker compose` nor `docker-compose` is installed".into());
    }
    Ok(())
}

/// Tears the project down however the test ends.
struct Down {
    env: Vec<(&'static str, String)>,
}

impl Drop for Down {
    fn drop(&mut self) {
        let mcs = self.env.iter().any(|(k, _)| *k == "MCS");
        let args: &[&str] = if mcs {
            &["--mcs", "--down"]
        } else {
            &["--down"]
        };
        let _ = script(args, &self.env);
    }
}

fn script(args: &[&str], env: &[(&'static str, String)]) -> std::io::Result<Output> {
    // `timeout` bounds the whole run (build included) even if a container hangs.
    Command::new("timeout")
        .arg("600")
        .arg(repo().join("scripts/compose-demo.sh"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(repo())
        .output()
}

#[test]
fn compose_demo_end_to_end() {
    if let Err(why) = docker_ready() {
        eprintln!("SKIP compose demo: {why}");
        return;
    }
    let port = testbed::free_port().expect("free port");
    let env = vec![
        (
            "COMPOSE_PROJECT_NAME",
            format!("iscsi-rs-test-{}", std::process::id()),
        ),
        ("NBD_PORT", port.to_string()),
        // The dev profile builds faster; the demo's behaviour is the same.
        ("PROFILE", "dev".to_string()),
        ("CHECK_TIMEOUT", "240".to_string()),
    ];
    let _down = Down { env: env.clone() };
    let t = Instant::now();
    let out = script(&[], &env).expect("compose-demo.sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "compose-demo.sh took {:.1} s:\n{text}",
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "compose-demo.sh failed: {text}");
    assert!(text.contains("nbd-verify: OK"), "{text}");
    assert!(
        text.contains("16384 blocks: 16384 ok, 0 stale, 0 torn"),
        "{text}"
    );
    let uri = format!("nbd://127.0.0.1:{port}/lun0");
    assert!(text.contains(&format!("nbdinfo {uri}")), "{text}");

    // The published export from the host, with libnbd's client.
    match Command::new("nbdinfo").args(["--size", &uri]).output() {
        Err(_) => eprintln!("SKIP nbdinfo part: nbdinfo not installed"),
        Ok(o) => {
            let size = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "nbdinfo: {size}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(size.trim(), (256u64 << 20).to_string());
        }
    }
    drop(_down);

    // The two-network MC/S variant: one connection per portal, san-a cut
    // mid-copy, the copy goes on over san-b (the image is built already).
    let _down_mcs = Down {
        env: env
            .iter()
            .cloned()
            .chain([("MCS", "1".to_string())])
            .collect(),
    };
    let t = Instant::now();
    let out = script(&["--mcs"], &env).expect("compose-demo.sh --mcs runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "compose-demo.sh --mcs took {:.1} s:\n{text}",
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "compose-demo.sh --mcs failed: {text}");
    assert!(text.contains("disconnecting the initiator from"), "{text}");
    assert!(
        text.contains("nbd-verify: OK") && text.contains(" 0 errors, 0 read mismatches"),
        "{text}"
    );
    assert!(
        text.contains("session recovered"),
        "no recovery after the disconnect: {text}"
    );
}
