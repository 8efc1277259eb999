//! APTPL: persistent reservations that survive a restart (SPC-5 §5.14.5
//! "Persistent reservations and power loss": "If the last valid APTPL bit
//! value received by the device server is one, the logical unit shall
//! retain any persistent reservation(s) that may be present and all
//! reservation keys ... for all I_T nexuses even if power is lost and later
//! returned").
//!
//! One JSON file per logical unit, `<state dir>/<target name>.lun<N>.pr.json`
//! (the state dir is chosen by the caller: beside the configuration file,
//! or `--pr-state-dir`). It exists exactly while the last APTPL bit was
//! one: every PROUT that changes the state then rewrites it atomically
//! ([`ctlsock::save_atomic`]: temporary file, fsync, rename, fsync of the
//! directory) *before* the command completes, and APTPL = 0 deletes it.
//! A write that fails fails the command (INSUFFICIENT REGISTRATION
//! RESOURCES) and leaves the state as it was.
//!
//! Loading is strict: a file that cannot be read, is not the format below,
//! or contradicts itself (a holder that is not registered, a zero key, an
//! unknown type, a duplicate nexus) is an error that names the file; the
//! logical unit is not started with a guess. A file saved for another
//! logical unit (its NAA identifier differs: the LUN now has another
//! backing store) is not applied; [`Load::Foreign`] lets the caller warn.
//! PRGENERATION restarts at zero ("set to zero as part of the power on
//! reset process", SPC-5 §6.16.2).
//!
//! ```json
//! {"format": 1, "target": "iqn...", "lun": 0, "naa": "6001405...",
//!  "registrations": [{"initiator_port": "iqn...,i,0x...", "target_port": "iqn...,t,0x0001",
//!                     "relative_target_port": 1, "key": "0x000000000000abcd"}],
//!  "reservation": {"holder": 0, "type": 5}}
//! ```
//! `holder` is the index of the holder's registration (for all-registrants
//! types, any registration).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{pr_type, Nexus, Persistent, Registration, Reservations};

/// The file format version written and accepted.
const FORMAT: u32 = 1;
/// Largest file accepted (a sanity bound: thousands of registrations).
pub const MAX_FILE_SIZE: u64 = 1 << 20;
/// Most registrations accepted from a file.
const MAX_REGISTRATIONS: usize = 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    format: u32,
    target: String,
    lun: u16,
    naa: String,
    registrations: Vec<RegistrationV1>,
    #[serde(default)]
    reservation: Option<ReservationV1>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationV1 {
    initiator_port: String,
    target_port: String,
    relative_target_port: u16,
    key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationV1 {
    holder: usize,
    #[serde(rename = "type")]
    pr_type: u8,
}

/// Where one logical unit's APTPL state lives, and whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrStore {
    pub path: PathBuf,
    pub target: String,
    pub lun: u16,
    /// The logical unit's NAA designator (VPD 83h), as hex.
    pub naa: String,
}

/// What [`PrStore::load`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Load {
    /// No file: APTPL was never set, or was cleared.
    None,
    /// The saved state, APTPL active.
    State(Reservations),
    /// A file saved for another logical unit (NAA `0`): not applied.
    Foreign(String),
}

/// The file name of one logical unit's state in `dir`. Target names are
/// validated iSCSI names (`[a-z0-9.:-]`, '_' when lenient); anything else
/// is replaced so the name can never leave `dir`.
pub fn file_in(dir: &Path, target: &str, lun: u16) -> PathBuf {
    let safe: String = target
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}.lun{lun}.pr.json"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl PrStore {
    pub fn new(dir: &Path, target: &str, lun: u16, naa: &[u8]) -> Self {
        Self {
            path: file_in(dir, target, lun),
            target: target.to_string(),
            lun,
            naa: hex(naa),
        }
    }

    /// The file's content for `r` (whose `aptpl` is set).
    pub fn encode(&self, r: &Reservations) -> Vec<u8> {
        let holder = r.reservation.as_ref().and_then(|p| {
            if pr_type::all_registrants(p.pr_type) {
                (!r.registrations.is_empty()).then_some(0)
            } else {
                r.registrations.iter().position(|x| x.nexus == p.holder)
            }
        });
        let f = FileV1 {
            format: FORMAT,
            target: self.target.clone(),
            lun: self.lun,
            naa: self.naa.clone(),
            registrations: r
                .registrations
                .iter()
                .map(|x| RegistrationV1 {
                    initiator_port: x.nexus.initiator_port.clone(),
                    target_port: x.nexus.target_port.clone(),
                    relative_target_port: x.nexus.relative_target_port,
                    key: format!("{:#018x}", x.key),
                })
                .collect(),
            reservation: r
                .reservation
                .as_ref()
                .zip(holder)
                .map(|(p, h)| ReservationV1 {
                    holder: h,
                    pr_type: p.pr_type,
                }),
        };
        let mut v = serde_json::to_vec_pretty(&f).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Writes `r` (APTPL active) or removes the file (`None`: APTPL was
    /// cleared), durably. Blocking.
    pub fn save(&self, r: Option<&Reservations>) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match r {
            Some(r) => {
                if !dir.as_os_str().is_empty() {
                    create_private_dir(dir)?;
                }
                ctlsock::save_atomic(&self.path, &self.encode(r), 0o600)
            }
            None => {
                match std::fs::remove_file(&self.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
                std::fs::File::open(dir)?.sync_all()
            }
        }
    }

    /// Reads the saved state. Blocking. Errors say what is wrong with
    /// which file (the caller adds what to do).
    pub fn load(&self) -> Result<Load, String> {
        let p = self.path.display();
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Load::None),
            Err(e) => return Err(format!("cannot read {p}: {e}")),
        };
        let mut text = Vec::new();
        f.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot read {p}: {e}"))?;
        if text.len() as u64 > MAX_FILE_SIZE {
            return Err(format!("{p} is larger than {MAX_FILE_SIZE} bytes"));
        }
        let f: FileV1 = serde_json::from_slice(&text)
            .map_err(|e| format!("{p} is not a saved reservation state: {e}"))?;
        if f.format != FORMAT {
            return Err(format!(
                "{p} has format {}, this target reads {FORMAT}",
                f.format
            ));
        }
        if !f.naa.eq_ignore_ascii_case(&self.naa) {
            return Ok(Load::Foreign(f.naa));
        }
        decode(f).map(Load::State).map_err(|e| format!("{p}: {e}"))
    }
}

/// The state a valid file describes, checked for consistency.
fn decode(f: FileV1) -> Result<Reservations, String> {
    if f.registrations.len() > MAX_REGISTRATIONS {
        return Err(format!("more than {MAX_REGISTRATIONS} registrations"));
    }
    let mut r = Reservations {
        aptpl: true,
        ..Default::default()
    };
    for (i, x) in f.registrations.into_iter().enumerate() {
        let digits = x.key.strip_prefix("0x").unwrap_or(&x.key);
        let key = u64::from_str_radix(digits, 16)
            .ok()
            .filter(|k| *k != 0)
            .ok_or_else(|| {
                format!(
                    "registrations[{i}].key {:?} is not a non-zero hex key",
                    x.key
                )
            })?;
        if !x.initiator_port.contains(",i,0x") || !x.target_port.contains(",t,0x") {
            return Err(format!("registrations[{i}] does not name an I_T nexus"));
        }
        let nexus = Nexus {
            initiator_port: x.initiator_port,
            target_port: x.target_port,
            relative_target_port: x.relative_target_port,
        };
        if r.registrations.iter().any(|y| y.nexus == nexus) {
            return Err(format!("registrations[{i}] registers its I_T nexus twice"));
        }
        r.registrations.push(Registration { nexus, key });
    }
    if let Some(res) = f.reservation {
        if !pr_type::valid(res.pr_type) {
            return Err(format!(
                "reservation type {} is not a valid type",
                res.pr_type
            ));
        }
        let holder = r
            .registrations
            .get(res.holder)
            .ok_or_else(|| format!("reservation holder {} is not a registration", res.holder))?;
        r.reservation = Some(Persistent {
            holder: holder.nexus.clone(),
            pr_type: res.pr_type,
        });
    }
    Ok(r)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_nexus as nx;

    fn state(t: u8) -> Reservations {
        Reservations {
            aptpl: true,
            registrations: vec![
                Registration {
                    nexus: nx(1),
                    key: 0xA,
                },
                Registration {
                    nexus: nx(2),
                    key: u64::MAX,
                },
            ],
            reservation: Some(Persistent {
                holder: nx(2),
                pr_type: t,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn save_load_clear() {
        let d = tempfile::tempdir().unwrap();
        let s = PrStore::new(
            &d.path().join("state"),
            "iqn.2024-01.org.example:T",
            3,
            &[0x60, 1],
        );
        assert_eq!(
            s.path.file_name().unwrap(),
            "iqn.2024-01.org.example:t.lun3.pr.json"
        );
        assert_eq!(s.load(), Ok(Load::None));
        for t in [1u8, 3, 5, 6] {
            s.save(Some(&state(t))).unwrap();
            assert_eq!(s.load(), Ok(Load::State(state(t))));
        }
        let mode = std::fs::metadata(&s.path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // All-registrants: the holder is any registration; is_holder holds
        // for every registrant either way.
        s.save(Some(&state(7))).unwrap();
        let Ok(Load::State(r)) = s.load() else {
            panic!()
        };
        assert!(r.is_holder(&nx(1)) && r.is_holder(&nx(2)));
        s.save(None).unwrap();
        assert_eq!(s.load(), Ok(Load::None));
        s.save(None).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let s = PrStore::new(d.path(), "iqn.2024-01.org.example:t", 0, &[0x60]);
        s.save(Some(&state(3))).unwrap();
        let good = std::fs::read_to_string(&s.path).unwrap();
        let cases = [
            ("{", "not a saved reservation state"),
            ("", "not a saved reservation state"),
            (&good.replace("\"format\": 1", "\"format\": 2"), "format 2"),
            (
                &good.replace("\"type\": 3", "\"type\": 4"),
                "not a valid type",
            ),
            (
                &good.replace("\"holder\": 1", "\"holder\": 9"),
                "not a registration",
            ),
            (
                &good.replace("0x000000000000000a", "0x0"),
                "non-zero hex key",
            ),
            (
                &good.replace("0x000000000000000a", "zz"),
                "non-zero hex key",
            ),
            (
                &good.replace("\"lun\": 0", "\"lun\": 0, \"extra\": 1"),
                "unknown field",
            ),
            (&good.replace(",i,0x801234560001", ""), "I_T nexus"),
        ];
        for (text, want) in cases {
            std::fs::write(&s.path, text).unwrap();
            let e = s.load().unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.contains(&s.path.display().to_string()), "{e}");
        }
        let two = good.replace(",i,0x801234560002", ",i,0x801234560001");
        std::fs::write(
            &s.path,
            two.replace("iqn.2024-01.org.example:i2", "iqn.2024-01.org.example:i1"),
        )
        .unwrap();
        assert!(s.load().unwrap_err().contains("twice"));
        std::fs::write(&s.path, vec![b' '; MAX_FILE_SIZE as usize + 1]).unwrap();
        assert!(s.load().unwrap_err().contains("larger"));
        // Another LU's file is recognised, not applied.
        std::fs::write(&s.path, &good).unwrap();
        let other = PrStore::new(d.path(), "iqn.2024-01.org.example:t", 0, &[0x61]);
        assert_eq!(other.load(), Ok(Load::Foreign("60".into())));
        // Unreadable: a directory where the file should be.
        std::fs::remove_file(&s.path).unwrap();
        std::fs::create_dir(&s.path).unwrap();
        assert!(s.load().unwrap_err().contains("cannot read"));
    }

    #[test]
    fn file_names_stay_in_the_directory() {
        let p = file_in(Path::new("/x"), "../../etc/passwd", 1);
        assert_eq!(p, Path::new("/x/.._.._etc_passwd.lun1.pr.json"));
    }
}
