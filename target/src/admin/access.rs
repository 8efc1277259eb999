//! Access control through the admin API: ACL entries (`allow`, `deny`,
//! LUN masks), CHAP accounts (`set-chap`) and the short-secret warnings
//! (RFC 7143 §9.2.1). ACL edits hand the target's new access policy to the
//! device server ([`crate::device::apply_acl`]), which raises REPORTED LUNS
//! DATA HAS CHANGED (SPC-5 §6.33) where a nexus's LUN inventory changed;
//! CHAP edits apply from the next login.

use std::sync::Arc;

use serde_json::json;

use super::handlers::{initiators, invalid, not_found, refused, Failure, Outcome};
use super::protocol::Account;
use super::{Admin, AdminState};
use crate::config::{AuthConfig, ChapCredentials, InitiatorConfig};
use crate::config_file;
use crate::server::Session;
use crate::sync::{read_lock, write_lock};

/// RFC 7143 §9.2.1 asks for CHAP secrets of at least 12 bytes when the
/// connection is not protected by IPsec; shorter ones are accepted with a
/// warning (test setups).
const SHORT_SECRET: usize = chap::MIN_SECRET_LEN;

pub(super) fn credentials(a: &Account, what: &str) -> Result<ChapCredentials, Failure> {
    if a.user.is_empty() || a.user.len() > 255 || a.secret.is_empty() || a.secret.len() > 255 {
        return Err(invalid(format!(
            "{what}: user and secret must be 1 to 255 bytes"
        )));
    }
    Ok(ChapCredentials {
        user: a.user.clone(),
        secret: a.secret.as_bytes().to_vec(),
    })
}

pub(super) fn short_secret_warnings(auth: &AuthConfig) -> Vec<String> {
    auth.incoming
        .iter()
        .chain(auth.outgoing.iter())
        .filter(|c| c.secret.len() < SHORT_SECRET)
        .map(|c| {
            format!(
                "the secret of CHAP user {:?} is shorter than {SHORT_SECRET} bytes (RFC 7143 §9.2.1)",
                c.user
            )
        })
        .collect()
}

impl Admin {
    /// Warnings about the running configuration: CHAP secrets shorter than
    /// RFC 7143 §9.2.1 recommends (discovery, target-wide, per-initiator).
    /// Logged at start-up and listed by `show`.
    pub(crate) fn config_warnings(&self) -> Vec<String> {
        let d = read_lock(&self.shared.discovery_auth).clone();
        let mut v: Vec<String> = short_secret_warnings(&d)
            .into_iter()
            .map(|w| format!("discovery: {w}"))
            .collect();
        for rt in self.shared.all_targets() {
            let c = rt.config();
            let own = c
                .initiators
                .iter()
                .filter_map(|(ini, i)| i.auth.as_ref().map(|a| (format!(" for {ini}"), a)));
            for (scope, a) in std::iter::once((String::new(), &c.auth)).chain(own) {
                for w in short_secret_warnings(a) {
                    v.push(format!("{}{scope}: {w}", c.name));
                }
            }
        }
        v
    }
}

pub(super) fn users(auth: &AuthConfig) -> (Vec<String>, Option<String>) {
    (
        auth.incoming.iter().map(|c| c.user.clone()).collect(),
        auth.outgoing.as_ref().map(|c| c.user.clone()),
    )
}

impl Admin {
    // ----- access control ------------------------------------------------

    /// `strict`: the target's `strict_names` (config file key or
    /// `--strict-names`). The same rule as the configuration file's ACL:
    /// a name outside RFC 3722 is refused with the reason; a name whose
    /// only fault is `_` (RFC 3722 lacks it, Windows and other initiators
    /// derive names from host names that have it) is refused when strict,
    /// else accepted with a warning in the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn allow(
        &self,
        strict: bool,
        target: &str,
        initiator: &str,
        (luns, all_luns): (Option<Vec<u64>>, bool),
        chap: Option<Account>,
        mutual: Option<Account>,
        control: Option<bool>,
    ) -> Outcome {
        let rt = self.target(target)?;
        let name_warning = acl_name_check(initiator, strict)?;
        let cfg = rt.config();
        let luns = luns.map(|mut v| {
            v.sort_unstable();
            v.dedup();
            v
        });
        if let Some(ls) = &luns {
            for n in ls {
                if !cfg.luns.iter().any(|l| l.lun == *n) {
                    return Err(not_found(format!("no LUN {n} in {}", rt.name)));
                }
            }
        }
        if mutual.is_some() && chap.is_none() {
            return Err(invalid(
                "mutual CHAP needs a CHAP account for the initiator",
            ));
        }
        let auth = match &chap {
            Some(c) => Some(AuthConfig {
                incoming: vec![credentials(c, "chap")?],
                outgoing: mutual
                    .as_ref()
                    .map(|m| credentials(m, "mutual chap"))
                    .transpose()?,
            }),
            None => None,
        };
        if all_luns && luns.is_some() {
            return Err(invalid("give either luns or all_luns, not both"));
        }
        let mut warnings = auth.as_ref().map(short_secret_warnings).unwrap_or_default();
        warnings.extend(name_warning);
        let was_open = cfg.allow.is_empty();
        let key = initiator.to_ascii_lowercase();
        let now = {
            let mut c = write_lock(&rt.config);
            if !c.allow.iter().any(|a| a.eq_ignore_ascii_case(initiator)) {
                c.allow.push(initiator.to_string());
            }
            let entry = c.initiators.entry(key.clone()).or_default();
            if luns.is_some() {
                entry.luns = luns;
            }
            if all_luns {
                entry.luns = None;
            }
            if auth.is_some() {
                entry.auth = auth;
            }
            if let Some(on) = control {
                entry.control = on;
            }
            let now = entry.clone();
            if now == InitiatorConfig::default() {
                c.initiators.remove(&key);
            }
            now
        };
        // LUN masking takes effect at once: the device server re-evaluates
        // what every logged-in initiator may see and raises REPORTED LUNS
        // DATA HAS CHANGED where that changed.
        crate::device::apply_acl(&rt.device, &rt.config());
        if was_open {
            warnings.push(self.now_closed_warning(&rt.name, initiator));
        }
        Ok(json!({
            "target": rt.name,
            "initiator": initiator,
            "luns": now.luns,
            "chap_users": now.auth.as_ref().map(|a| users(a).0).unwrap_or_default(),
            "control": now.control,
            "warnings": warnings,
        }))
    }

    /// The warning when the first ACL entry closes a target that was open
    /// to every initiator, naming the sessions of the others.
    fn now_closed_warning(&self, target: &str, initiator: &str) -> String {
        let others: Vec<Arc<Session>> = self
            .shared
            .sessions_of(target)
            .into_iter()
            .filter(|s| !s.core.initiator_name.eq_ignore_ascii_case(initiator))
            .collect();
        format!(
            "{} was open to every initiator; now only the ACL's initiators may log in{}",
            target,
            if others.is_empty() {
                String::new()
            } else {
                format!(
                    " (sessions of other initiators stay logged in but no longer see any \
                     LUN: {}; end them with logout-session)",
                    initiators(&others)
                )
            }
        )
    }

    pub(super) fn deny(
        &self,
        st: &mut AdminState,
        target: &str,
        initiator: &str,
        allow_any: bool,
    ) -> Outcome {
        let rt = self.target(target)?;
        let cfg = rt.config();
        if !cfg.allow.iter().any(|a| a.eq_ignore_ascii_case(initiator)) {
            return Err(not_found(format!(
                "{initiator} is not in the ACL of {}",
                rt.name
            )));
        }
        if cfg.allow.len() == 1 && !allow_any {
            return Err(refused(format!(
                "{initiator} is the last ACL entry of {}; removing it lets every initiator log in \
                 (pass --allow-any if that is what you want)",
                rt.name
            )));
        }
        {
            let mut c = write_lock(&rt.config);
            c.allow.retain(|a| !a.eq_ignore_ascii_case(initiator));
            c.initiators.remove(&initiator.to_ascii_lowercase());
        }
        // Its sessions still logged in lose every LUN (unless the ACL is
        // now empty, which opens the target to everyone).
        crate::device::apply_acl(&rt.device, &rt.config());
        if let Some(e) = st.ext.targets.get_mut(&rt.name.to_ascii_lowercase()) {
            e.acl_comments.remove(&initiator.to_ascii_lowercase());
        }
        let still: Vec<u16> = self
            .shared
            .sessions_of(&rt.name)
            .iter()
            .filter(|s| s.core.initiator_name.eq_ignore_ascii_case(initiator))
            .map(|s| s.core.tsih)
            .collect();
        Ok(json!({
            "target": rt.name,
            "initiator": initiator,
            "open_to_all": cfg.allow.len() == 1,
            "sessions_still_logged_in": still,
        }))
    }

    pub(super) fn set_chap(
        &self,
        target: Option<&str>,
        initiator: Option<&str>,
        ch: ChapChange,
    ) -> Outcome {
        if ch.add.is_none()
            && ch.remove.is_none()
            && ch.mutual.is_none()
            && !ch.no_mutual
            && !ch.clear
        {
            return Err(invalid(
                "nothing to change: give add, remove, mutual, no-mutual or clear",
            ));
        }
        let rt = target.map(|t| self.target(t)).transpose()?;
        // The accounts as they are now.
        let current: AuthConfig = match (&rt, initiator) {
            (None, Some(_)) => return Err(invalid("--initiator needs --target")),
            (None, None) => read_lock(&self.shared.discovery_auth).clone(),
            (Some(rt), None) => rt.config().auth,
            (Some(rt), Some(ini)) => {
                let cfg = rt.config();
                if !cfg.allow.iter().any(|a| a.eq_ignore_ascii_case(ini)) {
                    return Err(not_found(format!(
                        "{ini} is not in the ACL of {}; add it with `allow` first",
                        rt.name
                    )));
                }
                cfg.initiator(ini)
                    .and_then(|a| a.auth.clone())
                    .unwrap_or_default()
            }
        };
        let new = ch.apply(current)?;
        let (incoming, outgoing) = users(&new);
        let mut warnings = short_secret_warnings(&new);
        match (&rt, initiator) {
            (None, _) => {
                *write_lock(&self.shared.discovery_auth) = new;
            }
            (Some(rt), None) => {
                write_lock(&rt.config).auth = new;
            }
            (Some(rt), Some(ini)) => {
                // Takes effect at the initiator's next login (login reads
                // the accounts at every login).
                let key = ini.to_ascii_lowercase();
                let mut c = write_lock(&rt.config);
                let entry = c.initiators.entry(key.clone()).or_default();
                entry.auth = (!new.incoming.is_empty()).then_some(new);
                if *entry == InitiatorConfig::default() {
                    c.initiators.remove(&key);
                }
                if c.initiators
                    .get(&key)
                    .and_then(|e| e.auth.as_ref())
                    .is_none()
                {
                    warnings.push(format!(
                        "{ini} has no CHAP account of its own any more: the target-wide accounts apply to it"
                    ));
                }
            }
        }
        Ok(json!({
            "scope": match (target, initiator) {
                (None, _) => "discovery".to_string(),
                (Some(t), None) => t.to_string(),
                (Some(t), Some(i)) => format!("{t} for {i}"),
            },
            "chap_users": incoming,
            "mutual_user": outgoing,
            "warnings": warnings,
        }))
    }
}

/// The CHAP edits of one set-chap request.
pub(crate) struct ChapChange {
    pub(super) add: Option<Account>,
    pub(super) remove: Option<String>,
    pub(super) mutual: Option<Account>,
    pub(super) no_mutual: bool,
    pub(super) clear: bool,
}

impl ChapChange {
    pub(super) fn apply(&self, mut a: AuthConfig) -> Result<AuthConfig, Failure> {
        if self.clear {
            a = AuthConfig::default();
        }
        if let Some(u) = &self.remove {
            let before = a.incoming.len();
            a.incoming.retain(|c| c.user != *u);
            if a.incoming.len() == before {
                return Err(not_found(format!("no CHAP user {u:?}")));
            }
        }
        if let Some(acc) = &self.add {
            let c = credentials(acc, "add")?;
            match a.incoming.iter_mut().find(|o| o.user == c.user) {
                Some(o) => *o = c,
                None => a.incoming.push(c),
            }
        }
        if self.no_mutual {
            a.outgoing = None;
        }
        if let Some(m) = &self.mutual {
            a.outgoing = Some(credentials(m, "mutual")?);
        }
        if a.outgoing.is_some() && a.incoming.is_empty() {
            return Err(refused(
                "mutual CHAP needs at least one incoming account (mutual follows one-way CHAP); \
                 drop it with no-mutual first",
            ));
        }
        Ok(a)
    }
}

/// An ACL's initiator name, by the configuration file's rule
/// ([`config_file::check_initiator_name`]): refused outside RFC 3722 (with
/// a hint when `strict` refused a `_`); a name with `_` accepted when not
/// `strict`, with the warning returned for the answer.
fn acl_name_check(initiator: &str, strict: bool) -> Result<Option<String>, Failure> {
    let lenient = matches!(
        proto::name::IscsiName::parse_lenient(initiator),
        Ok((_, true))
    );
    config_file::check_initiator_name("initiator", initiator, strict).map_err(|e| {
        let hint = if lenient {
            " (the target runs with strict_names, which refuses '_')"
        } else {
            ""
        };
        invalid(format!("{e}{hint}"))
    })?;
    Ok((!strict && lenient).then(|| {
        format!(
            "initiator name {initiator:?} contains '_', which RFC 3722 does not allow; \
             accepted (set strict_names in the config file or start the target with \
             --strict-names to refuse such names)"
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::protocol::ErrorKind;

    fn acc(u: &str, s: &str) -> Option<Account> {
        Some(Account {
            user: u.into(),
            secret: s.into(),
        })
    }

    fn change() -> ChapChange {
        ChapChange {
            add: None,
            remove: None,
            mutual: None,
            no_mutual: false,
            clear: false,
        }
    }

    #[test]
    fn chap_changes() {
        let a = ChapChange {
            add: acc("u1", "secret-one-123"),
            ..change()
        }
        .apply(AuthConfig::default())
        .unwrap();
        assert_eq!(a.incoming.len(), 1);
        // Same user replaces.
        let a = ChapChange {
            add: acc("u1", "secret-two-123"),
            mutual: acc("tgt", "target-secret-1"),
            ..change()
        }
        .apply(a)
        .unwrap();
        assert_eq!(a.incoming.len(), 1);
        assert_eq!(a.incoming[0].secret, b"secret-two-123");
        assert!(a.outgoing.is_some());
        // Removing the last incoming account while mutual is set: refused.
        let e = ChapChange {
            remove: Some("u1".into()),
            ..change()
        }
        .apply(a.clone())
        .unwrap_err();
        assert_eq!(e.0, ErrorKind::Refused);
        let e = ChapChange {
            remove: Some("nobody".into()),
            ..change()
        }
        .apply(a.clone())
        .unwrap_err();
        assert_eq!(e.0, ErrorKind::NotFound);
        let cleared = ChapChange {
            clear: true,
            ..change()
        }
        .apply(a)
        .unwrap();
        assert_eq!(cleared, AuthConfig::default());
        assert_eq!(
            short_secret_warnings(&AuthConfig {
                incoming: vec![ChapCredentials::parse("u:short").unwrap()],
                outgoing: None
            })
            .len(),
            1
        );
    }
}
