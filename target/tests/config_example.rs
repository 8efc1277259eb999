//! The shipped example configuration loads, and survives a save/load round
//! trip unchanged.

use std::path::PathBuf;

use iscsi_target::config::{BackendConfig, IoMode};
use iscsi_target::config_file::{self, FileError};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/target.json")
}

#[test]
fn example_loads_and_says_what_it_means() {
    let l = config_file::load(&example()).unwrap_or_else(|e| panic!("example: {e}"));
    let s = &l.server;
    assert_eq!(s.targets.len(), 2);
    assert_eq!(s.discovery_auth.incoming[0].user, "discover");
    let t = &s.targets[0];
    assert_eq!(t.portal_groups.len(), 2);
    assert_eq!(t.portal_groups[1].tpgt, 2);
    assert_eq!(t.luns.len(), 4);
    assert_eq!(
        t.luns[0].backend,
        BackendConfig::File {
            path: "/var/lib/iscsi-rs/disk1-lun0.img".into(),
            size: Some(10 << 30),
            thin: true
        }
    );
    assert_eq!(t.luns[1].block_size, 4096);
    assert_eq!(t.luns[1].mode, IoMode::WriteThrough);
    assert_eq!(t.luns[3].mode, IoMode::ReadOnly);
    assert_eq!(
        t.auth.outgoing.as_ref().map(|c| c.user.as_str()),
        Some("disk1")
    );
    assert_eq!(t.allow.len(), 2);
    assert_eq!(t.limits.max_outstanding_r2t, 8);
    // Per-initiator LUN masking and CHAP are part of the runtime ACL.
    let host1 = "iqn.2024-01.org.example:host1";
    let host2 = "iqn.2024-01.org.example:host2";
    assert_eq!(t.lun_mask(host1), Some(&[0, 2][..]));
    assert!(t.lun_visible(host1, 2));
    assert!(!t.lun_visible(host1, 1));
    assert!(t.lun_visible(host2, 1));
    let own = t.auth_for(host1);
    assert_eq!(own.incoming.len(), 1);
    assert_eq!(own.incoming[0].user, "host1");
    assert_eq!(t.auth_for(host2).incoming[0].user, "alice");
    // What the runtime structs cannot hold is in the extensions.
    let lx = &l.ext.target(&t.name).unwrap().luns[&0];
    assert_eq!(lx.vendor.as_deref(), Some("EXAMPLE"));
    assert_eq!(lx.wwn_seed.as_deref(), Some("disk1-lun0"));
    assert_eq!(l.admin_socket, Some("/run/iscsi-rs/target.sock".into()));
}

#[test]
fn example_round_trips_through_save() {
    let first = config_file::load(&example()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.json");
    config_file::save_atomic(&saved, &config_file::to_file(&first)).unwrap();
    let second = config_file::load(&saved).unwrap();
    assert_eq!(first, second);
    // And the saved text is stable: saving again gives the same bytes.
    let again = dir.path().join("again.json");
    config_file::save_atomic(&again, &config_file::to_file(&second)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        std::fs::read_to_string(&again).unwrap()
    );
    // Comments survive on targets and LUNs.
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("scratch space, lost at exit"));
}

#[test]
fn a_broken_copy_of_the_example_names_the_field() {
    let text = std::fs::read_to_string(example()).unwrap();
    let cases = [
        (
            "\"sector_size\": 4096",
            "\"sector_size\": 1000",
            "targets[0].luns[1].sector_size",
            "must be 512 or 4096, got 1000",
        ),
        (
            "\"max_connections\": 8",
            "\"max_connections\": 8, \"max_conections\": 8",
            "targets[0].session.max_conections",
            "unknown field",
        ),
        (
            "\"mode\": \"wt\"",
            "\"mode\": \"rw\"",
            "targets[0].luns[1].mode",
            "\"rw\"",
        ),
        (
            "\"luns\": [0, 2]",
            "\"luns\": [0, 9]",
            "targets[0].acl[0].luns[1]",
            "no LUN 9",
        ),
        (
            "\"user\": \"discover\"",
            "\"usr\": \"discover\"",
            "discovery.chap.incoming[0].usr",
            "unknown field",
        ),
    ];
    for (from, to, path, reason) in cases {
        assert!(text.contains(from), "{from}");
        let bad = text.replacen(from, to, 1);
        let e = config_file::parse_str(&bad).unwrap_err();
        assert_eq!(e.json_path(), Some(path), "{e}");
        assert!(e.to_string().contains(reason), "{e}");
        assert!(matches!(
            e,
            FileError::Syntax { .. } | FileError::Invalid { .. }
        ));
    }
}
