//! One LUN entry onto a runtime [`LunConfig`]: LUN number (SAM-5 flat
//! space), sector size, cache mode, size and the backend-specific keys
//! (file, block, mem, null, rbd), each combination checked with the JSON
//! path of the bad key.

use std::path::PathBuf;

use super::{check_ascii_field, FileError, LunEntry, LunExt, SizeEntry, MAX_LUN};
use crate::config::{parse_size, BackendConfig, IoMode, LunConfig};

fn size_value(path: &str, s: &SizeEntry) -> Result<u64, FileError> {
    match s {
        SizeEntry::Bytes(n) => Ok(*n),
        SizeEntry::Text(t) => parse_size(t).map_err(|e| FileError::invalid(path, e.to_string())),
    }
}

/// Map one LUN entry; `path` is its JSON path (e.g. `targets[0].luns[2]`).
pub fn lun_to_runtime(path: &str, l: &LunEntry) -> Result<(LunConfig, LunExt), FileError> {
    let p = |k: &str| format!("{path}.{k}");
    if l.lun > MAX_LUN {
        return Err(FileError::invalid(
            p("lun"),
            format!("must be between 0 and {MAX_LUN}, got {}", l.lun),
        ));
    }
    let block_size = match l.sector_size {
        None => 512,
        Some(s @ (512 | 4096)) => s,
        Some(s) => {
            return Err(FileError::invalid(
                p("sector_size"),
                format!("must be 512 or 4096, got {s}"),
            ))
        }
    };
    let mode = match &l.mode {
        None => IoMode::WriteBack,
        Some(m) => IoMode::parse(m).ok_or_else(|| {
            FileError::invalid(
                p("mode"),
                format!("must be \"wb\", \"wt\" or \"ro\", got {m:?}"),
            )
        })?,
    };
    let size = l
        .size
        .as_ref()
        .map(|s| size_value(&p("size"), s))
        .transpose()?;
    if let Some(size) = size {
        if size < u64::from(block_size) || !size.is_multiple_of(u64::from(block_size)) {
            return Err(FileError::invalid(
                p("size"),
                format!("must be a non-zero multiple of the sector size {block_size}, got {size}"),
            ));
        }
    }
    let backend = backend_to_runtime(path, l, size)?;
    if let Some(s) = &l.serial {
        check_ascii_field(&p("serial"), s, 64)?;
    }
    if let Some(s) = &l.wwn_seed {
        check_ascii_field(&p("wwn_seed"), s, 255)?;
    }
    if let Some(s) = &l.vendor {
        check_ascii_field(&p("vendor"), s, 8)?;
    }
    if let Some(s) = &l.product {
        check_ascii_field(&p("product"), s, 16)?;
    }
    Ok((
        LunConfig {
            lun: l.lun,
            backend,
            block_size,
            mode,
            serial: l.serial.clone(),
            removable: l.removable,
            sanitize: l.sanitize,
            control: l.control,
        },
        LunExt {
            comment: l.comment.clone(),
            vendor: l.vendor.clone(),
            product: l.product.clone(),
            wwn_seed: l.wwn_seed.clone(),
        },
    ))
}

/// A key that must be absent for this backend: an error naming it and why.
fn absent(path: &str, key: &str, present: bool, why: &str) -> Result<(), FileError> {
    if present {
        Err(FileError::invalid(format!("{path}.{key}"), why.to_string()))
    } else {
        Ok(())
    }
}

/// The backend of one LUN entry and the keys each backend takes; `size`
/// is the entry's size, already checked against the sector size.
fn backend_to_runtime(
    path: &str,
    l: &LunEntry,
    size: Option<u64>,
) -> Result<BackendConfig, FileError> {
    let p = |k: &str| format!("{path}.{k}");
    let need_path = |what: &str| -> Result<PathBuf, FileError> {
        match &l.path {
            Some(x) if !x.as_os_str().is_empty() => Ok(x.clone()),
            _ => Err(FileError::invalid(
                p("path"),
                format!("required for a {what} LUN"),
            )),
        }
    };
    let no = |key: &str, present: bool, why: &str| absent(path, key, present, why);
    if l.backend != "rbd" {
        no("image", l.image.is_some(), "only rbd LUNs have an image")?;
        no("ceph", l.ceph.is_some(), "only rbd LUNs have ceph settings")?;
    }
    let backend = match l.backend.as_str() {
        "rbd" => BackendConfig::Rbd(rbd_to_runtime(path, l)?),
        "mem" | "null" => {
            no("path", l.path.is_some(), "mem and null LUNs have no path")?;
            no(
                "thin",
                l.thin.is_some(),
                "only file LUNs take thin (mem is always thin, null never)",
            )?;
            let size = size.ok_or_else(|| {
                FileError::invalid(p("size"), format!("required for a {} LUN", l.backend))
            })?;
            if l.backend == "mem" {
                BackendConfig::Memory { size }
            } else {
                BackendConfig::Null { size }
            }
        }
        "file" => BackendConfig::File {
            path: need_path("file")?,
            size,
            thin: l.thin.unwrap_or(false),
        },
        "block" => {
            no(
                "size",
                l.size.is_some(),
                "a block LUN has the size of its device",
            )?;
            no("thin", l.thin.is_some(), "only file LUNs take thin")?;
            BackendConfig::Block {
                path: need_path("block")?,
            }
        }
        other => {
            return Err(FileError::invalid(
                p("backend"),
                format!("must be \"file\", \"block\", \"mem\", \"null\" or \"rbd\", got {other:?}"),
            ))
        }
    };
    Ok(backend)
}

/// The image and Ceph client settings of an rbd LUN.
fn rbd_to_runtime(path: &str, l: &LunEntry) -> Result<crate::config::RbdSpec, FileError> {
    let p = |k: &str| format!("{path}.{k}");
    let no = |key: &str, present: bool, why: &str| absent(path, key, present, why);
    no(
        "path",
        l.path.is_some(),
        "an rbd LUN names its image in \"image\"",
    )?;
    no(
        "size",
        l.size.is_some(),
        "an rbd LUN has the size of its image (rbd resize)",
    )?;
    no("thin", l.thin.is_some(), "an rbd LUN is always thin")?;
    let name = l.image.as_deref().unwrap_or("");
    let mut r = crate::config::RbdSpec::parse_name(name).ok_or_else(|| {
        FileError::invalid(
            p("image"),
            format!("expected \"POOL/IMAGE\" or \"POOL/NAMESPACE/IMAGE\", got {name:?}"),
        )
    })?;
    let c = l.ceph.clone().unwrap_or_default();
    if c.namespace.is_some() && r.namespace.is_some() {
        return Err(FileError::invalid(
            p("ceph.namespace"),
            "namespace given twice",
        ));
    }
    if let Some(t) = c.timeout_secs {
        if !(1..=3600).contains(&t) {
            return Err(FileError::invalid(
                p("ceph.timeout_secs"),
                format!("must be between 1 and 3600, got {t}"),
            ));
        }
    }
    r.namespace = r.namespace.or(c.namespace);
    r.conf = c.conf;
    r.user = c.user.map(|u| u.trim_start_matches("client.").to_string());
    r.keyring = c.keyring;
    r.timeout_secs = c.timeout_secs;
    r.shared = c.shared;
    Ok(r)
}
