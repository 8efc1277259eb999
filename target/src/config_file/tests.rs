//! Tests of the configuration file: the error path of every refused
//! value, and load/save round trips.

use super::*;
use crate::config::{BackendConfig, IoMode, SessionLimits};

const MINIMAL: &str = r#"{
        "targets": [{
            "name": "iqn.2024-01.org.example:disk1",
            "portal_groups": [{"tpgt": 1, "portals": ["127.0.0.1:3260"]}],
            "luns": [{"lun": 0, "backend": "mem", "size": "64M"}]
        }]
    }"#;

fn err_of(text: &str) -> FileError {
    parse_str(text).expect_err("should be rejected")
}

/// Replace `from` with `to` in MINIMAL, and check the error path.
fn bad(from: &str, to: &str, path: &str, reason_part: &str) {
    let text = MINIMAL.replacen(from, to, 1);
    assert_ne!(text, MINIMAL, "{from} not in MINIMAL");
    let e = err_of(&text);
    assert_eq!(e.json_path(), Some(path), "{e}");
    assert!(e.to_string().contains(reason_part), "{e}");
}

#[test]
fn minimal_loads_with_defaults() {
    let l = parse_str(MINIMAL).unwrap();
    let t = &l.server.targets[0];
    assert_eq!(t.luns[0].backend, BackendConfig::Memory { size: 64 << 20 });
    assert_eq!(t.luns[0].block_size, 512);
    assert_eq!(t.luns[0].mode, IoMode::WriteBack);
    assert_eq!(t.limits, SessionLimits::default());
    assert!(t.allow.is_empty());
    assert_eq!(l.ext, Extensions::default());
}

/// Issue 10 item 3: initiator names with '_' (outside RFC 3722, sent
/// by real initiators) are accepted in ACLs unless `strict_names`;
/// other bad names stay refused; `save` keeps the setting.
#[test]
fn underscore_initiator_names_unless_strict() {
    let acl = r#""luns": [{"lun": 0, "backend": "mem", "size": "64M"}],
            "acl": [{"initiator": "iqn.1991-05.com.microsoft:web_01"}]"#;
    let text = MINIMAL.replacen(
        r#""luns": [{"lun": 0, "backend": "mem", "size": "64M"}]"#,
        acl,
        1,
    );
    let l = parse_str(&text).unwrap();
    assert_eq!(
        l.server.targets[0].allow,
        ["iqn.1991-05.com.microsoft:web_01"]
    );
    assert!(!to_file(&l).strict_names);
    let strict = text.replacen("\"targets\"", "\"strict_names\": true, \"targets\"", 1);
    let e = err_of(&strict);
    assert_eq!(e.json_path(), Some("targets[0].acl[0].initiator"), "{e}");
    assert!(e.to_string().contains("'_'"), "{e}");
    let bad_name = text.replacen("web_01", "web 01", 1);
    assert!(err_of(&bad_name).to_string().contains("' '"));
    let strict_ok = MINIMAL.replacen("\"targets\"", "\"strict_names\": true, \"targets\"", 1);
    assert!(to_file(&parse_str(&strict_ok).unwrap()).strict_names);
}

#[test]
fn company_id_forms_and_save() {
    for v in ["00:a0:98", "0x00A098", "00-a0-98", "00a098"] {
        assert_eq!(parse_company_id(v), Ok(0x00a098), "{v}");
    }
    for v in ["14:05", "0x1001405", "zz:zz:zz", ""] {
        assert!(parse_company_id(v).is_err(), "{v}");
    }
    let text = MINIMAL.replacen(
        "\"targets\"",
        "\"company_id\": \"0x00A098\", \"targets\"",
        1,
    );
    let l = parse_str(&text).unwrap();
    assert_eq!(l.ext.company_id, Some(0x00a098));
    assert_eq!(to_file(&l).company_id.as_deref(), Some("00:a0:98"));
    let bad = MINIMAL.replacen("\"targets\"", "\"company_id\": \"x\", \"targets\"", 1);
    assert_eq!(err_of(&bad).json_path(), Some("company_id"));
}

#[test]
fn errors_carry_json_paths() {
    bad(
        "\"size\": \"64M\"",
        "\"size\": \"64M\", \"sector_size\": 1000",
        "targets[0].luns[0].sector_size",
        "must be 512 or 4096, got 1000",
    );
    bad(
        "\"size\": \"64M\"",
        "\"size\": \"64M\", \"colour\": 1",
        "targets[0].luns[0].colour",
        "unknown field `colour`",
    );
    bad(
        "\"backend\": \"mem\"",
        "\"backend\": \"tape\"",
        "targets[0].luns[0].backend",
        "tape",
    );
    bad(
        "\"64M\"",
        "\"64Q\"",
        "targets[0].luns[0].size",
        "invalid size",
    );
    bad(
        "\"64M\"",
        "1000",
        "targets[0].luns[0].size",
        "multiple of the sector size",
    );
    bad(
        "\"lun\": 0",
        "\"lun\": 20000",
        "targets[0].luns[0].lun",
        "16383",
    );
    bad(
        "\"lun\": 0",
        "\"lun\": -1",
        "targets[0].luns[0].lun",
        "invalid value",
    );
    bad(
        "\"size\": \"64M\"",
        "\"size\": \"64M\", \"mode\": \"rw\"",
        "targets[0].luns[0].mode",
        "\"rw\"",
    );
    bad(
        "\"size\": \"64M\"",
        "\"size\": \"64M\", \"path\": \"/x\"",
        "targets[0].luns[0].path",
        "no path",
    );
    bad(
        "\"backend\": \"mem\", \"size\": \"64M\"",
        "\"backend\": \"file\"",
        "targets[0].luns[0].path",
        "required",
    );
    bad(
        "127.0.0.1:3260",
        "nowhere:x",
        "targets[0].portal_groups[0].portals[0]",
        "invalid portal",
    );
    bad(
        "iqn.2024-01.org.example:disk1",
        "disk1",
        "targets[0].name",
        "iqn.",
    );
    bad(
        "\"tpgt\": 1",
        "\"tpgt\": 70000",
        "targets[0].portal_groups[0].tpgt",
        "invalid value",
    );
    bad(
        "\"luns\"",
        "\"session\": {\"first_burst_length\": 2000000, \"max_burst_length\": 1000000}, \"luns\"",
        "targets[0].session.first_burst_length",
        "§13.14",
    );
    bad(
        "\"luns\"",
        "\"session\": {\"queue_depth\": 0}, \"luns\"",
        "targets[0].session.queue_depth",
        "between 1",
    );
    bad(
        "\"luns\"",
        "\"acl\": [{\"initiator\": \"iqn.2024-01.org.example:h\", \"luns\": [3]}], \"luns\"",
        "targets[0].acl[0].luns[0]",
        "no LUN 3",
    );
    bad(
        "\"luns\"",
        "\"chap\": {\"outgoing\": {\"user\": \"t\", \"secret\": \"s\"}}, \"luns\"",
        "targets[0].chap.outgoing",
        "incoming",
    );
    bad(
        "\"luns\"",
        "\"chap\": {\"incoming\": [{\"user\": \"u\", \"secret\": \"\"}]}, \"luns\"",
        "targets[0].chap.incoming[0].secret",
        "1 to 255",
    );
    let e = err_of("{\"targets\": [");
    assert!(matches!(e, FileError::Syntax { .. }), "{e}");
    let e = err_of("{\"targets\": []}");
    assert_eq!(e.json_path(), Some("targets"));
}

#[test]
fn duplicates_rejected() {
    let text = MINIMAL.replacen(
        "{\"lun\": 0, \"backend\": \"mem\", \"size\": \"64M\"}",
        "{\"lun\": 0, \"backend\": \"mem\", \"size\": \"64M\"}, {\"lun\": 0, \"backend\": \"null\", \"size\": \"1M\"}",
        1,
    );
    let e = err_of(&text);
    assert_eq!(e.json_path(), Some("targets[0].luns[1].lun"), "{e}");
}

#[test]
fn comments_accepted_and_kept() {
    let text = MINIMAL
        .replacen(
            "{\n        \"targets\"",
            "{\"_comment\": [\"a\", \"b\"], \"targets\"",
            1,
        )
        .replacen("{\"lun\": 0,", "{\"_comment\": \"scratch\", \"lun\": 0,", 1)
        .replacen(
            "\"luns\"",
            "\"chap\": {\"_comment\": \"x\", \"incoming\": []}, \"luns\"",
            1,
        );
    let l = parse_str(&text).unwrap();
    assert_eq!(
        l.ext.comment,
        Some(Comment::Lines(vec!["a".into(), "b".into()]))
    );
    let f = to_file(&l);
    assert_eq!(
        f.targets[0].luns[0].comment,
        Some(Comment::Line("scratch".into()))
    );
    assert_eq!(parse_str(&to_json(&f)).unwrap(), l);
}

#[test]
fn sizes_round_trip() {
    assert_eq!(size_entry(1 << 30), SizeEntry::Text("1G".into()));
    assert_eq!(size_entry(3 << 20), SizeEntry::Text("3M".into()));
    assert_eq!(size_entry(1536), SizeEntry::Bytes(1536));
    assert_eq!(size_entry(0), SizeEntry::Bytes(0));
}

#[test]
fn acl_extensions_and_lookups() {
    let text = MINIMAL.replacen(
        "\"luns\"",
        r#""chap": {"incoming": [{"user": "tw", "secret": "target-wide-secret"}]},
               "acl": [{"initiator": "iqn.2024-01.org.example:h1", "luns": [0],
                        "chap": {"incoming": [{"user": "h1", "secret": "h1-secret-1234"}]}},
                       {"initiator": "iqn.2024-01.org.example:h2"}],
               "luns""#,
        1,
    );
    let l = parse_str(&text).unwrap();
    let t = &l.server.targets[0];
    assert_eq!(t.allow.len(), 2);
    assert!(t.allows("IQN.2024-01.org.example:h2"));
    // The ACL's per-initiator settings are in the runtime config.
    let h1 = t.auth_for("iqn.2024-01.org.example:H1");
    assert_eq!(h1.incoming[0].user, "h1");
    let h2 = t.auth_for("iqn.2024-01.org.example:h2");
    assert_eq!(h2.incoming[0].user, "tw");
    assert!(t.lun_visible("iqn.2024-01.org.example:h1", 0));
    assert!(!t.lun_visible("iqn.2024-01.org.example:h1", 1));
    assert!(t.lun_visible("iqn.2024-01.org.example:h2", 1));
    assert_eq!(t.initiators.len(), 1, "only h1 has settings");
    assert_eq!(l.ext, Extensions::default(), "nothing left over");
    let again = parse_str(&to_json(&to_file(&l))).unwrap();
    assert_eq!(again, l);
    // Secrets never in Debug output.
    assert!(!format!("{:?}", to_file(&l)).contains("h1-secret"));
}

#[test]
fn rbd_luns_load_and_round_trip() {
    let text = MINIMAL.replacen(
        r#""backend": "mem", "size": "64M""#,
        r#""backend": "rbd", "image": "rbd/disk1",
               "ceph": {"conf": "/etc/ceph/ceph.conf", "user": "iscsi", "timeout_secs": 5}"#,
        1,
    );
    let l = parse_str(&text).unwrap();
    let BackendConfig::Rbd(r) = &l.server.targets[0].luns[0].backend else {
        panic!("{l:?}")
    };
    assert_eq!(r.display_name(), "rbd/disk1");
    assert_eq!(
        (r.user.as_deref(), r.timeout_secs),
        (Some("iscsi"), Some(5))
    );
    assert_eq!(parse_str(&to_json(&to_file(&l))).unwrap(), l);
    bad(
        r#""backend": "mem", "size": "64M""#,
        r#""backend": "rbd", "image": "nopool""#,
        "targets[0].luns[0].image",
        "POOL/IMAGE",
    );
    bad(
        r#""backend": "mem", "size": "64M""#,
        r#""backend": "rbd", "image": "p/i", "size": "1G""#,
        "targets[0].luns[0].size",
        "rbd resize",
    );
    bad(
        r#""size": "64M""#,
        r#""size": "64M", "image": "p/i""#,
        "targets[0].luns[0].image",
        "only rbd",
    );
}

#[test]
fn save_is_atomic_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.json");
    std::fs::write(&p, "old").unwrap();
    let l = parse_str(MINIMAL).unwrap();
    save_atomic(&p, &to_file(&l)).unwrap();
    let back = load(&p).unwrap();
    assert_eq!(back, l);
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    // A directory that does not exist is an error, not a panic.
    assert!(save_atomic(&dir.path().join("no/such/t.json"), &to_file(&l)).is_err());
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.json");
    let text = MINIMAL.replacen(
        "\"backend\": \"mem\", \"size\": \"64M\"",
        "\"backend\": \"file\", \"path\": \"disk.img\", \"size\": \"1M\", \"thin\": true",
        1,
    );
    std::fs::write(&p, text).unwrap();
    let l = load(&p).unwrap();
    assert_eq!(
        l.server.targets[0].luns[0].backend,
        BackendConfig::File {
            path: dir.path().join("disk.img"),
            size: Some(1 << 20),
            thin: true
        }
    );
}
