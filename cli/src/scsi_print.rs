//! How `iscsi scsi` shows what a command returned: aligned text for
//! people, or one JSON document with `--json` (the field names are part of
//! the CLI's interface).

use initiator::device::{Capacity, LunInfo};
use initiator::session::RawResult;
use proto::scsi::inquiry::{
    parse_device_identification, parse_vpd, BlockLimits, LogicalBlockProvisioning, StandardInquiry,
};
use serde_json::json;

/// Standard INQUIRY data (SPC-5 §6.7.2).
pub(crate) fn print_inquiry(i: &StandardInquiry, json: bool) {
    if json {
        print_json(&json!({
            "peripheral_qualifier": i.peripheral_qualifier,
            "device_type": i.device_type,
            "device_type_name": device_type_name(i.device_type),
            "removable": i.rmb,
            "version": i.version,
            "hisup": i.hisup,
            "tpgs": i.tpgs,
            "cmdque": i.cmdque,
            "vendor": ascii(&i.vendor),
            "product": ascii(&i.product),
            "revision": ascii(&i.revision),
            "version_descriptors": i.version_descriptors,
        }));
        return;
    }
    println!("Vendor:      {}", ascii(&i.vendor));
    println!("Product:     {}", ascii(&i.product));
    println!("Revision:    {}", ascii(&i.revision));
    println!(
        "Device type: {} ({:#04x})",
        device_type_name(i.device_type),
        i.device_type
    );
    println!("Qualifier:   {}", i.peripheral_qualifier);
    println!("Version:     {:#04x}", i.version);
    println!("Removable:   {}", i.rmb);
    println!(
        "CmdQue:      {}  HiSup: {}  TPGS: {}",
        i.cmdque, i.hisup, i.tpgs
    );
}

/// The LUN inventory with each LUN's identity and capacity.
pub(crate) fn print_luns(luns: &[LunInfo], json: bool) {
    if json {
        let v: Vec<_> = luns
            .iter()
            .map(|l| {
                json!({
                    "lun": l.number,
                    "lun_raw": format!("{:016x}", l.lun),
                    "device_type": l.device_type,
                    "device_type_name": device_type_name(l.device_type),
                    "vendor": l.vendor,
                    "product": l.product,
                    "revision": l.revision,
                    "capacity": l.capacity.as_ref().map(capacity_json),
                })
            })
            .collect();
        print_json(&json!(v));
        return;
    }
    for l in luns {
        let n = l
            .number
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("{:#018x}", l.lun));
        let cap = l
            .capacity
            .map(|c| {
                format!(
                    " {} blocks x {} bytes ({})",
                    c.blocks,
                    c.block_size,
                    human(c.bytes())
                )
            })
            .unwrap_or_default();
        println!(
            "LUN {n}: {} {} {} [{}]{cap}",
            l.vendor,
            l.product,
            l.revision,
            device_type_name(l.device_type)
        );
    }
}

/// A raw command's status, sense and data (hex-dumped unless written to
/// `output`).
pub(crate) fn print_raw(cdb: &[u8], r: &RawResult, output: Option<&std::path::Path>, json: bool) {
    if json {
        print_json(&json!({
                "cdb": hex(cdb),
                "status": r.status,
                "status_name": initiator::error::status_name(r.status),
                "sense": hex(&r.raw_sense),
                "sense_key": r.sense.as_ref().map(|s| format!("{:?}", s.key)),
                "asc": r.sense.as_ref().map(|s| format!("{:?}", s.asc)),
                "data": hex(&r.data),
                "residual_underflow": r.underflow,
                "residual_overflow": r.overflow,
        }));
        return;
    }
    println!("cdb: {}", hex(cdb));
    println!(
        "status: {} ({:#04x})",
        initiator::error::status_name(r.status),
        r.status
    );
    if !r.raw_sense.is_empty() {
        print!("sense: {}", hex(&r.raw_sense));
        if let Some(sn) = &r.sense {
            print!("  [{:?}, {:?}]", sn.key, sn.asc);
        }
        println!();
    }
    if let Some(u) = r.underflow {
        println!("residual: {u} bytes not transferred");
    }
    if let Some(path) = output {
        println!("data: {} bytes written to {}", r.data.len(), path.display());
    } else if !r.data.is_empty() {
        println!("data ({} bytes):", r.data.len());
        hexdump(&r.data);
    }
}

/// Every `--json` output goes through here: one pretty-printed document.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{v:#}");
}

/// The capacity object of `readcap --json` and `report-luns --json`.
fn capacity_json(c: &Capacity) -> serde_json::Value {
    json!({
        "blocks": c.blocks,
        "block_size": c.block_size,
        "bytes": c.bytes(),
        "last_lba": c.blocks.saturating_sub(1),
        "thin": c.lbpme,
    })
}

pub(crate) fn print_capacity(c: &Capacity, json: bool) {
    if json {
        print_json(&capacity_json(c));
    } else {
        println!("Last LBA:   {}", c.blocks.saturating_sub(1));
        println!("Blocks:     {}", c.blocks);
        println!("Block size: {} bytes", c.block_size);
        println!("Capacity:   {} bytes ({})", c.bytes(), human(c.bytes()));
        println!("Thin:       {}", c.lbpme);
    }
}

pub(crate) fn print_vpd(page: u8, data: &[u8], json: bool) {
    let body = parse_vpd(data).map(|(_, b)| b).unwrap_or(&[]);
    let decoded = match page {
        0x00 => {
            json!({"supported_pages": body.iter().map(|p| format!("{p:#04x}")).collect::<Vec<_>>()})
        }
        0x80 => json!({"unit_serial_number": ascii(body)}),
        0x83 => json!({"designators": parse_device_identification(body).iter().map(|d| json!({
            "type": d.designator_type, "association": d.association, "code_set": d.code_set,
            "value": if d.code_set == 2 || d.code_set == 3 { ascii(&d.value) } else { hex(&d.value) },
        })).collect::<Vec<_>>()}),
        0xB0 => {
            let l = BlockLimits::parse(body);
            json!({
                "max_transfer_length": l.max_transfer_length,
                "optimal_transfer_length": l.optimal_transfer_length,
                "max_unmap_lba_count": l.max_unmap_lba_count,
                "max_unmap_block_descriptor_count": l.max_unmap_block_descriptor_count,
                "optimal_unmap_granularity": l.optimal_unmap_granularity,
                "max_write_same_length": l.max_write_same_length,
                "max_compare_and_write_length": l.max_compare_and_write_length,
            })
        }
        0xB2 => match LogicalBlockProvisioning::parse(body) {
            Some(l) => {
                json!({"lbpu": l.lbpu, "lbpws": l.lbpws, "lbpws10": l.lbpws10, "lbprz": l.lbprz, "provisioning_type": l.provisioning_type})
            }
            None => json!(null),
        },
        _ => json!(null),
    };
    if json {
        print_json(&json!({"page": page, "raw": hex(data), "decoded": decoded}));
    } else {
        println!("VPD page {page:#04x} ({} bytes):", data.len());
        if !decoded.is_null() {
            if let Some(m) = decoded.as_object() {
                for (k, v) in m {
                    println!("  {k}: {v}");
                }
            }
        }
        hexdump(data);
    }
}

fn device_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "disk",
        0x01 => "tape",
        0x05 => "cd/dvd",
        0x0c => "controller",
        0x0d => "enclosure",
        0x1f => "unknown",
        _ => "other",
    }
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn hexdump(b: &[u8]) {
    for (i, chunk) in b.chunks(16).enumerate() {
        let asc: String = chunk
            .iter()
            .map(|&c| {
                if (0x20..0x7f).contains(&c) {
                    c as char
                } else {
                    '.'
                }
            })
            .collect();
        println!("  {:04x}: {:<48} {asc}", i * 16, hex(chunk));
    }
}
