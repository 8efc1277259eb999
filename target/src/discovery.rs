//! SendTargets (RFC 7143 §13.3, Appendix C): which targets and portals an
//! initiator is told about.
//!
//! RFC 7143 Appendix C: "the response ... consists of a list of TargetName
//! keys, each followed by zero or more TargetAddress keys ... of the form
//! domainname[:port][,portal-group-tag]". IPv6 addresses are bracketed.
//! A portal bound to the unspecified address (0.0.0.0 / ::) is reported with
//! the local address the asking initiator connected to, since that one is
//! certainly reachable from it.

use std::net::SocketAddr;

use proto::text::discovery::DiscoveredTarget;
pub use proto::text::discovery::SendTargetsQuery;

use crate::config::TargetConfig;

/// The address to report for a portal, `host:port`.
pub fn target_address(portal: SocketAddr, local: SocketAddr) -> String {
    let ip = if portal.ip().is_unspecified() {
        // An IPv4 initiator on a dual-stack [::] listener shows up as
        // ::ffff:a.b.c.d; report the plain IPv4 address it can use.
        match local.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(std::net::IpAddr::V6(v6)),
            v4 => v4,
        }
    } else {
        portal.ip()
    };
    // SocketAddr's Display brackets IPv6 addresses: "[::1]:3260".
    SocketAddr::new(ip, portal.port()).to_string()
}

/// The targets (and their addresses) a SendTargets query reports; encode
/// with [`proto::text::discovery::encode_send_targets`].
///
/// `targets` are the candidate targets, `initiator` filters by ACL,
/// `current` is the normal session's target (None in discovery sessions),
/// `local` is the address the initiator connected to.
pub fn send_targets(
    query: &SendTargetsQuery,
    targets: &[&TargetConfig],
    initiator: &str,
    current: Option<&str>,
    local: SocketAddr,
) -> Vec<DiscoveredTarget> {
    let mut out = Vec::new();
    for t in targets {
        let wanted = match (query, current) {
            // In a normal session every form reports only the session's target.
            (SendTargetsQuery::Target(n), Some(cur)) => {
                n.eq_ignore_ascii_case(cur) && t.name.eq_ignore_ascii_case(cur)
            }
            (_, Some(cur)) => t.name.eq_ignore_ascii_case(cur),
            (SendTargetsQuery::All, None) => true,
            (SendTargetsQuery::Target(n), None) => t.name.eq_ignore_ascii_case(n),
            (SendTargetsQuery::SessionTarget, None) => false,
        };
        if !wanted || !t.allows(initiator) {
            continue;
        }
        let mut addresses: Vec<(String, u16)> = Vec::new();
        for g in &t.portal_groups {
            for p in &g.portals {
                let a = (target_address(*p, local), g.tpgt);
                if !addresses.contains(&a) {
                    addresses.push(a);
                }
            }
        }
        out.push(DiscoveredTarget {
            name: t.name.clone(),
            alias: t.alias.clone(),
            addresses,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, PortalGroup, SessionLimits};

    fn target(name: &str, portals: &[&str], allow: &[&str]) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            alias: None,
            portal_groups: vec![PortalGroup {
                tpgt: 1,
                portals: portals.iter().map(|p| p.parse().unwrap()).collect(),
            }],
            luns: vec![],
            auth: AuthConfig::default(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            initiators: Default::default(),
            limits: SessionLimits::default(),
        }
    }

    fn text(v: Vec<DiscoveredTarget>) -> String {
        let b = proto::text::encode_kv(&proto::text::discovery::encode_send_targets(&v));
        String::from_utf8(b.to_vec()).unwrap().replace('\0', "\n")
    }

    #[test]
    fn all_lists_every_allowed_target_and_portal() {
        let a = target("iqn.2024-01.t:a", &["0.0.0.0:3260", "[::1]:3261"], &[]);
        let b = target("iqn.2024-01.t:b", &["10.0.0.1:3260"], &["iqn.other"]);
        let local: SocketAddr = "192.168.1.5:3260".parse().unwrap();
        let r = text(send_targets(
            &SendTargetsQuery::All,
            &[&a, &b],
            "iqn.me",
            None,
            local,
        ));
        assert_eq!(
            r,
            "TargetName=iqn.2024-01.t:a\nTargetAddress=192.168.1.5:3260,1\nTargetAddress=[::1]:3261,1\n"
        );
        let r = text(send_targets(
            &SendTargetsQuery::parse("All"),
            &[&a, &b],
            "iqn.other",
            None,
            local,
        ));
        assert!(r.contains("TargetName=iqn.2024-01.t:b\nTargetAddress=10.0.0.1:3260,1\n"));
    }

    #[test]
    fn v4_mapped_local_addresses_are_reported_as_ipv4() {
        let portal: SocketAddr = "[::]:3260".parse().unwrap();
        let local: SocketAddr = "[::ffff:10.1.2.3]:3260".parse().unwrap();
        assert_eq!(target_address(portal, local), "10.1.2.3:3260");
        let local: SocketAddr = "[fd00::5]:3260".parse().unwrap();
        assert_eq!(target_address(portal, local), "[fd00::5]:3260");
        let fixed: SocketAddr = "10.9.9.9:3261".parse().unwrap();
        assert_eq!(target_address(fixed, local), "10.9.9.9:3261");
    }

    #[test]
    fn by_name_and_in_normal_sessions() {
        let a = target("iqn.2024-01.t:a", &["127.0.0.1:3260"], &[]);
        let b = target("iqn.2024-01.t:b", &["127.0.0.1:3260"], &[]);
        let local: SocketAddr = "127.0.0.1:3260".parse().unwrap();
        let r = text(send_targets(
            &SendTargetsQuery::parse("iqn.2024-01.t:b"),
            &[&a, &b],
            "i",
            None,
            local,
        ));
        assert_eq!(
            r,
            "TargetName=iqn.2024-01.t:b\nTargetAddress=127.0.0.1:3260,1\n"
        );
        let r = text(send_targets(
            &SendTargetsQuery::All,
            &[&a, &b],
            "i",
            Some("iqn.2024-01.t:a"),
            local,
        ));
        assert_eq!(
            r,
            "TargetName=iqn.2024-01.t:a\nTargetAddress=127.0.0.1:3260,1\n"
        );
        let r = send_targets(
            &SendTargetsQuery::parse("iqn.2024-01.t:b"),
            &[&a, &b],
            "i",
            Some("iqn.2024-01.t:a"),
            local,
        );
        assert!(r.is_empty());
        assert!(send_targets(&SendTargetsQuery::SessionTarget, &[&a], "i", None, local).is_empty());
    }
}
