//! The vendor command C7h (LIST, GET, SET of named switches) and the vendor
//! VPD page C7h, as the device server answers them. Layouts:
//! `proto::scsi::control`.

use super::Policy;
use crate::scsi::lu::IoMode;
use crate::scsi::{DeviceServer, LogicalUnit, Nexus, ScsiRequest};
use bytes::Bytes;
use proto::scsi::control::{
    encode_switches, ControlError, ControlVpd, CtlCommand, Switch, ASC_ACCESS_DENIED_NO_RIGHTS,
    MAX_TAG,
};
use proto::scsi::{Sense, SenseKey};

/// Names of the switches of a LU, in LIST order.
pub fn names() -> Vec<String> {
    let mut v = vec!["io_mode".to_string(), "trace".to_string()];
    v.extend((1..=MAX_TAG).map(|t| format!("tag{t}.policy")));
    v.push("can_set".to_string());
    v
}

fn mode_name(m: IoMode) -> &'static str {
    match m {
        IoMode::WriteBack => "wb",
        IoMode::WriteThrough => "wt",
        IoMode::ReadOnly => "ro",
    }
}

fn tag_of_switch(name: &str) -> Option<u8> {
    let t = name.strip_prefix("tag")?.strip_suffix(".policy")?;
    t.parse::<u8>().ok().filter(|t| (1..=MAX_TAG).contains(t))
}

/// Every switch of `lu` with its current value, as `nexus` sees it.
pub fn list(srv: &DeviceServer, lu: &LogicalUnit, nexus: &Nexus) -> Vec<Switch> {
    let sw = |name: &str, value: String, writable: bool, help: &str| Switch {
        name: name.into(),
        value,
        writable,
        help: help.into(),
    };
    let mut v = vec![
        sw(
            "io_mode",
            mode_name(lu.state().mode).into(),
            true,
            "wb (write-back), wt (write-through) or ro (read-only: writes fail WRITE PROTECTED)",
        ),
        sw(
            "trace",
            if lu.control.trace() { "on" } else { "off" }.into(),
            true,
            "on|off: log every command to this LUN on the target (info level)",
        ),
    ];
    for t in 1..=MAX_TAG {
        v.push(sw(
            &format!("tag{t}.policy"),
            lu.control.policy(t).to_string(),
            true,
            "log|fua|reject|limit:N (N commands/s) for commands carrying this tag",
        ));
    }
    v.push(sw(
        "can_set",
        if srv.has_control_right(nexus) {
            "yes"
        } else {
            "no"
        }
        .into(),
        false,
        "whether this initiator may SET switches (target ACL flag)",
    ));
    v
}

/// The vendor VPD page (INQUIRY EVPD=1, page C7h) body after the 4-byte
/// header.
pub fn vpd_body(srv: &DeviceServer, lu: &LogicalUnit, nexus: &Nexus) -> Vec<u8> {
    let page = ControlVpd::new(lu.control.enabled(), srv.has_control_right(nexus), names());
    page.encode(0)[4..].to_vec()
}

/// Maps a decode error of the vendor CDB to INVALID FIELD IN CDB at the
/// offending field.
fn cdb_error(e: &ControlError) -> Sense {
    let (byte, bit) = match e {
        ControlError::Reserved(b) => (*b as u16, None),
        ControlError::ServiceAction(_) => (1, Some(4)),
        ControlError::Version(_) => (2, None),
        ControlError::BadName(_) => (3, None),
        ControlError::BadValue => (14, None),
        _ => (0, None),
    };
    Sense::invalid_field_in_cdb(byte, bit)
}

fn access_denied() -> Sense {
    Sense::new(SenseKey::ILLEGAL_REQUEST, ASC_ACCESS_DENIED_NO_RIGHTS)
}

/// Executes the vendor command on a LU with the channel on.
pub(crate) fn execute(
    srv: &DeviceServer,
    lu: &LogicalUnit,
    nexus: &Nexus,
    req: &ScsiRequest,
) -> Result<Bytes, Sense> {
    let cmd = CtlCommand::decode(&req.cdb).map_err(|e| cdb_error(&e))?;
    match cmd {
        CtlCommand::List { alloc_len } => {
            let mut d = encode_switches(&list(srv, lu, nexus));
            d.truncate(alloc_len as usize);
            Ok(Bytes::from(d))
        }
        CtlCommand::Get { name, alloc_len } => {
            let one: Vec<Switch> = list(srv, lu, nexus)
                .into_iter()
                .filter(|s| s.name == name)
                .collect();
            if one.is_empty() {
                return Err(Sense::invalid_field_in_cdb(3, None));
            }
            let mut d = encode_switches(&one);
            d.truncate(alloc_len as usize);
            Ok(Bytes::from(d))
        }
        CtlCommand::Set { name, .. } => {
            let who = nexus.initiator_name();
            if !srv.has_control_right(nexus) {
                tracing::warn!(initiator = who, lun = lu.cfg.lun, switch = %name,
                    "control SET refused: the initiator has no control right");
                return Err(access_denied());
            }
            let want = CtlCommand::param_len(&req.cdb);
            if req.data_out.len() < want {
                return Err(Sense::illegal_request(
                    proto::scsi::Asc::PARAMETER_LIST_LENGTH_ERROR,
                ));
            }
            let partial = CtlCommand::Set {
                name: name.clone(),
                value: String::new(),
            };
            let value = match partial.with_data_out(&req.data_out[..want]) {
                Ok(CtlCommand::Set { value, .. }) => value,
                _ => return Err(Sense::invalid_field_in_parameter_list(0, None)),
            };
            set(srv, lu, nexus, &name, &value)?;
            tracing::info!(initiator = who, lun = lu.cfg.lun, switch = %name, %value, "control switch set");
            Ok(Bytes::new())
        }
    }
}

/// Applies one SET (the right has been checked).
fn set(
    srv: &DeviceServer,
    lu: &LogicalUnit,
    nexus: &Nexus,
    name: &str,
    value: &str,
) -> Result<(), Sense> {
    let bad_value = || Sense::invalid_field_in_parameter_list(0, None);
    match name {
        "io_mode" => {
            let mode = match value {
                "wb" => IoMode::WriteBack,
                "wt" => IoMode::WriteThrough,
                "ro" => IoMode::ReadOnly,
                _ => return Err(bad_value()),
            };
            // A file or block device opened read-only cannot take writes.
            if mode != IoMode::ReadOnly
                && lu.cfg.mode == IoMode::ReadOnly
                && matches!(lu.cfg.backend.kind(), "file" | "block")
            {
                return Err(bad_value());
            }
            srv.set_mode_by(lu.cfg.lun, mode, Some(nexus))
                .map_err(|_| Sense::invalid_field_in_cdb(0, None))
        }
        "trace" => {
            match value {
                "on" => lu.control.set_trace(true),
                "off" => lu.control.set_trace(false),
                _ => return Err(bad_value()),
            }
            Ok(())
        }
        _ => match tag_of_switch(name) {
            Some(t) => {
                let p = Policy::parse(value).map_err(|_| bad_value())?;
                lu.control.set_policy(t, p);
                Ok(())
            }
            // Unknown, or the read-only `can_set`.
            None => Err(Sense::invalid_field_in_cdb(3, None)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_names() {
        let n = names();
        assert_eq!(n.len(), 10);
        assert!(n
            .iter()
            .all(|s| s.len() <= proto::scsi::control::MAX_NAME_LEN));
        assert_eq!(tag_of_switch("tag7.policy"), Some(7));
        assert_eq!(tag_of_switch("tag0.policy"), None);
        assert_eq!(tag_of_switch("tag8.policy"), None);
        assert_eq!(tag_of_switch("io_mode"), None);
    }
}
