//! Device-server tests: every command's main and error paths, run through
//! `DeviceServer::execute` on memory and file backends.

mod copy;
mod maintenance;
mod pages;
mod reservations;
mod rw;
mod thin;

use super::super::*;
use crate::backend::{FileBackend, FileOptions, MemoryBackend};
use proto::scsi::cdb::{self, CdbSize, Command, Rw};
use proto::scsi::inquiry::{self as inq, StandardInquiry};
use proto::scsi::{Asc, Lun, Sense, SenseKey, Status};

fn nx(i: u8) -> Nexus {
    Nexus {
        initiator_port: format!("iqn.2024-01.test:init{i},i,0x00023d00000{i}"),
        target_port: "iqn.2024-01.test:target,t,0x0001".into(),
        relative_target_port: 1,
    }
}

fn mem_lu(lun: u16, blocks: u64, bs: u32) -> LuConfig {
    let mut c = LuConfig::new(lun, Arc::new(MemoryBackend::new(blocks * bs as u64)));
    c.block_size = bs;
    c
}

fn server(cfgs: Vec<LuConfig>) -> Arc<DeviceServer> {
    DeviceServer::new(cfgs).unwrap()
}

async fn run(s: &DeviceServer, n: &Nexus, lun: u16, cdb: &[u8], data: &[u8]) -> ScsiResult {
    let req = ScsiRequest {
        lun: Lun::from_number(lun).0,
        cdb: Bytes::copy_from_slice(cdb),
        data_out: Bytes::copy_from_slice(data),
        expected_data_in_length: 1 << 20,
        task_attr: 1,
    };
    s.execute(n, req).await
}

/// Runs TEST UNIT READY until GOOD (consumes unit attentions).
async fn clear_ua(s: &DeviceServer, n: &Nexus, lun: u16) {
    for _ in 0..10 {
        if run(s, n, lun, cdb::test_unit_ready().as_bytes(), &[])
            .await
            .status
            == 0
        {
            return;
        }
    }
    panic!("unit attentions do not clear");
}

fn sense(r: &ScsiResult) -> Sense {
    assert_eq!(
        r.status,
        Status::CHECK_CONDITION.0,
        "expected CHECK CONDITION, got {r:?}"
    );
    r.sense_data().expect("sense data")
}

fn assert_sense(r: &ScsiResult, key: SenseKey, asc: Asc) {
    let s = sense(r);
    assert_eq!((s.key, s.asc), (key, asc), "{s:?}");
}

fn good(r: &ScsiResult) {
    assert_eq!(
        r.status,
        0,
        "expected GOOD, got {r:?} / {:?}",
        r.sense_data()
    );
}

fn w10(lba: u32, blocks: u16) -> Vec<u8> {
    cdb::write10(lba, blocks, false).as_bytes().to_vec()
}
fn r10(lba: u32, blocks: u16) -> Vec<u8> {
    cdb::read10(lba, blocks, false).as_bytes().to_vec()
}
