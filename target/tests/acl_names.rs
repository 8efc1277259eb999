//! Initiator names in ACL entries added through the admin API (`iscsi
//! target allow`) follow the configuration file's rule (RFC 3722, see
//! `config_file::check_initiator_name`): a malformed name is refused with
//! the reason; a name whose only fault is `_` is refused when the target
//! runs with `strict_names`, else accepted with a warning in the answer.

use std::time::Duration;

use iscsi_target::admin::protocol::{ErrorKind, Request};
use iscsi_target::admin::{self};
use iscsi_target::config_file;

fn config(strict: bool) -> String {
    format!(
        r#"{{
  "strict_names": {strict},
  "targets": [{{
    "name": "iqn.2024-01.org.example:acl-names",
    "portal_groups": [{{"tpgt": 1, "portals": ["127.0.0.1:0"]}}],
    "luns": [{{"lun": 0, "backend": "mem", "size": "1M"}}]
  }}]
}}"#
    )
}

const T: &str = "iqn.2024-01.org.example:acl-names";

fn allow(initiator: &str) -> Request {
    serde_json::from_value(serde_json::json!({
        "op": "allow", "target": T, "initiator": initiator
    }))
    .unwrap()
}

/// (ok, error message or warnings joined)
async fn run(strict: bool, names: &[&str]) -> Vec<(bool, String, Option<ErrorKind>)> {
    let loaded = config_file::parse_str(&config(strict)).unwrap();
    let (server, admin) = admin::launch(loaded, None).await.unwrap();
    let mut out = Vec::new();
    for n in names {
        let r = admin.handle(allow(n)).await;
        let text = match (&r.result, &r.error) {
            (Some(v), _) => v["warnings"].to_string(),
            (_, Some(e)) => e.message.clone(),
            _ => String::new(),
        };
        out.push((r.ok, text, r.error.map(|e| e.kind)));
    }
    server.shutdown_with_grace(Duration::from_millis(10)).await;
    out
}

const UNDERSCORE: &str = "iqn.1991-05.com.microsoft:web_01";

#[tokio::test]
async fn malformed_acl_names_are_refused_with_the_reason() {
    for strict in [false, true] {
        let r = run(
            strict,
            &[
                "iqn.2024-13.org.example:bad-month",
                "iqn.2024-01.org.example:has space",
                "not-a-name",
                "eui.0123",
            ],
        )
        .await;
        assert_eq!(r[0].2, Some(ErrorKind::Invalid), "{r:?}");
        assert!(r[0].1.contains("month 13"), "{}", r[0].1);
        assert!(r[1].1.contains("' '"), "{}", r[1].1);
        assert!(r[2].1.contains("must start with"), "{}", r[2].1);
        assert!(r[3].1.contains("16 hex digits"), "{}", r[3].1);
        assert!(r.iter().all(|(ok, ..)| !ok), "{r:?}");
    }
}

#[tokio::test]
async fn underscore_is_a_warning_unless_strict() {
    let lenient = run(false, &[UNDERSCORE, "iqn.2024-01.org.example:plain"]).await;
    assert!(lenient[0].0, "{lenient:?}");
    assert!(
        lenient[0].1.contains("'_'") && lenient[0].1.contains("strict"),
        "the answer warns: {}",
        lenient[0].1
    );
    assert!(lenient[1].0);
    assert_eq!(lenient[1].1, "[]", "no warning for a plain name");

    let strict = run(true, &[UNDERSCORE, "iqn.2024-01.org.example:plain"]).await;
    assert!(!strict[0].0, "{strict:?}");
    assert_eq!(strict[0].2, Some(ErrorKind::Invalid));
    assert!(
        strict[0].1.contains("'_'") && strict[0].1.contains("strict_names"),
        "the error says what is wrong and why: {}",
        strict[0].1
    );
    assert!(strict[1].0, "{strict:?}");
}
