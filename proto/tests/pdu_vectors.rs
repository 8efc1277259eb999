//! Real PDU streams captured between libiscsi's tools and tgtd
//! (`scripts/capture-vectors.sh`): every PDU must decode, have the expected
//! type, and re-encode byte for byte (including CRC32C header digests
//! computed by tgtd and libiscsi, which pins the digest byte order).
//!
//! Files: `tests/data/<scenario>.c<N>.<i2t|t2i>.hex`, one line per TCP segment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::BytesMut;
use proto::pdu::{decode_frame, DecodeLimits, DigestConfig, Opcode, Pdu, Stage};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// One TCP connection: both directions.
#[derive(Default)]
struct Connection {
    i2t: Vec<u8>,
    t2i: Vec<u8>,
}

fn load(scenario: &str) -> BTreeMap<String, Connection> {
    let mut conns: BTreeMap<String, Connection> = BTreeMap::new();
    for entry in std::fs::read_dir(data_dir()).expect("tests/data exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(rest) = name.strip_prefix(&format!("{scenario}.")) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        assert_eq!(parts.len(), 3, "unexpected file name {name}");
        let text = std::fs::read_to_string(&path).unwrap();
        let bytes = hex::decode(text.split_whitespace().collect::<String>()).unwrap();
        let conn = conns.entry(parts[0].to_owned()).or_default();
        match parts[1] {
            "i2t" => conn.i2t = bytes,
            "t2i" => conn.t2i = bytes,
            d => panic!("bad direction {d} in {name}"),
        }
    }
    assert!(!conns.is_empty(), "no vectors for scenario {scenario}");
    conns
}

/// Digests negotiated in the target's login responses (login text is in the
/// clear: digests start with the Full Feature Phase, RFC 7143 §13.1).
fn negotiated(t2i: &[u8]) -> DigestConfig {
    let mut buf = BytesMut::from(t2i);
    let limits = DecodeLimits {
        max_data_segment_length: 1 << 24,
        digests: DigestConfig::NONE,
    };
    let mut text = Vec::new();
    while let Ok(Some(Pdu::LoginResponse(r))) = decode_frame(&mut buf, &limits) {
        text.extend_from_slice(&r.data);
        if r.transit && r.nsg == Stage::FullFeaturePhase {
            break;
        }
    }
    let has = |kv: &[u8]| text.split(|b| *b == 0).any(|k| k == kv);
    DigestConfig {
        header: has(b"HeaderDigest=CRC32C"),
        data: has(b"DataDigest=CRC32C"),
    }
}

/// Decodes a whole stream, switching digests on after the login's final
/// PDU, and checks that each PDU re-encodes to the same bytes.
fn decode_stream(bytes: &[u8], ffp_digests: DigestConfig) -> Vec<Pdu> {
    let mut buf = BytesMut::from(bytes);
    let mut limits = DecodeLimits {
        max_data_segment_length: 1 << 24,
        digests: DigestConfig::NONE,
    };
    let mut pdus = Vec::new();
    let mut offset = 0;
    while !buf.is_empty() {
        let before = buf.len();
        let pdu = decode_frame(&mut buf, &limits)
            .unwrap_or_else(|e| panic!("decode error at offset {offset}: {e}"))
            .unwrap_or_else(|| panic!("stream ends inside a PDU at offset {offset}"));
        let frame = &bytes[offset..offset + before - buf.len()];
        let encoded = pdu.encode(limits.digests).to_bytes();
        assert_eq!(
            hex::encode(&encoded),
            hex::encode(frame),
            "re-encoding {:?} at offset {offset} differs",
            pdu.opcode()
        );
        offset += frame.len();
        let login_done = match &pdu {
            Pdu::LoginRequest(r) => r.transit && r.nsg == Stage::FullFeaturePhase,
            Pdu::LoginResponse(r) => {
                r.transit && r.nsg == Stage::FullFeaturePhase && r.status_class == 0
            }
            _ => false,
        };
        if login_done {
            limits.digests = ffp_digests;
        }
        pdus.push(pdu);
    }
    pdus
}

struct Decoded {
    i2t: Vec<Pdu>,
    t2i: Vec<Pdu>,
    digests: DigestConfig,
}

fn decode_scenario(scenario: &str) -> Vec<Decoded> {
    load(scenario)
        .into_values()
        .map(|c| {
            let digests = negotiated(&c.t2i);
            let i2t = decode_stream(&c.i2t, digests);
            let t2i = decode_stream(&c.t2i, digests);
            assert!(i2t.iter().all(|p| p.opcode().is_initiator()));
            assert!(t2i.iter().all(|p| p.opcode().is_target()));
            Decoded { i2t, t2i, digests }
        })
        .collect()
}

fn text_has(data: &[u8], needle: &str) -> bool {
    data.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
}

fn text_has_prefix(data: &[u8], prefix: &str) -> bool {
    data.split(|b| *b == 0)
        .any(|kv| kv.starts_with(prefix.as_bytes()))
}

fn all(d: &[Decoded]) -> impl Iterator<Item = &Pdu> {
    d.iter().flat_map(|c| c.i2t.iter().chain(c.t2i.iter()))
}

fn count(d: &[Decoded], op: Opcode) -> usize {
    all(d).filter(|p| p.opcode() == op).count()
}

#[test]
fn discovery_login_sendtargets_and_auth_failure() {
    let d = decode_scenario("discovery");
    // The discovery session: login with SessionType=Discovery, then SendTargets.
    let disc = d
        .iter()
        .find(|c| {
            c.i2t.iter().any(
                |p| matches!(p, Pdu::LoginRequest(r) if text_has(&r.data, "SessionType=Discovery")),
            )
        })
        .expect("a discovery session");
    let Pdu::LoginRequest(login) = &disc.i2t[0] else {
        panic!("first PDU is not a login request: {:?}", disc.i2t[0]);
    };
    // libiscsi without credentials skips the security stage.
    assert_eq!(login.csg, Stage::LoginOperationalNegotiation);
    assert!(login.transit && login.nsg == Stage::FullFeaturePhase);
    assert_eq!((login.version_max, login.version_min), (0, 0));
    assert_eq!(login.tsih, 0);
    assert!(text_has(
        &login.data,
        "InitiatorName=iqn.2024-01.org.example:initiator"
    ));
    let Pdu::LoginResponse(resp) = &disc.t2i[0] else {
        panic!("first target PDU is not a login response");
    };
    assert_eq!(resp.itt, login.itt);
    assert_eq!(resp.isid, login.isid);
    assert_eq!(resp.status_class, 0);
    assert_ne!(resp.tsih, 0, "target assigns a TSIH on success");

    let text_req = disc
        .i2t
        .iter()
        .find_map(|p| match p {
            Pdu::TextRequest(t) => Some(t),
            _ => None,
        })
        .expect("SendTargets text request");
    assert!(text_has(&text_req.data, "SendTargets=All"));
    assert!(text_req.final_);
    let text_resp = disc
        .t2i
        .iter()
        .find_map(|p| match p {
            Pdu::TextResponse(t) => Some(t),
            _ => None,
        })
        .expect("SendTargets text response");
    assert_eq!(text_resp.itt, text_req.itt);
    for iqn in [
        "TargetName=iqn.2024-01.org.example:vectors",
        "TargetName=iqn.2024-01.org.example:vectors-chap",
        "TargetName=iqn.2024-01.org.example:vectors-write",
        "TargetName=iqn.2024-01.org.example:vectors-hdigest",
    ] {
        assert!(text_has(&text_resp.data, iqn), "{iqn} missing");
    }
    assert!(text_has_prefix(&text_resp.data, "TargetAddress=127.0.0.1:"));

    // iscsi-ls -s then logs into each target without credentials: the CHAP
    // target answers "Authentication failure" (class 2, detail 1).
    let failure = all(&d)
        .find_map(|p| match p {
            Pdu::LoginResponse(r) if r.status_class != 0 => Some(r),
            _ => None,
        })
        .expect("an authentication failure");
    assert_eq!((failure.status_class, failure.status_detail), (2, 1));

    // REPORT LUNS (0xa0) in the normal sessions, with Data-In answers.
    assert!(all(&d).any(|p| matches!(p, Pdu::ScsiCommand(c) if c.cdb[0] == 0xa0)));
    assert!(count(&d, Opcode::DATA_IN) > 0);
    // One of the normal sessions negotiated header digests.
    assert!(d.iter().any(|c| c.digests.header));
}

#[test]
fn inquiry_data_in_with_status() {
    let d = decode_scenario("inquiry");
    assert_eq!(d.len(), 1);
    let c = &d[0];
    let inquiry = c
        .i2t
        .iter()
        .find_map(|p| match p {
            Pdu::ScsiCommand(c) if c.cdb[0] == 0x12 => Some(c),
            _ => None,
        })
        .expect("INQUIRY");
    assert!(inquiry.read && !inquiry.write && inquiry.final_);
    assert_eq!(inquiry.lun >> 48, 1, "LUN 1, peripheral addressing");
    assert_eq!(inquiry.cdb.len(), 16);
    let data_in = c
        .t2i
        .iter()
        .find_map(|p| match p {
            Pdu::DataIn(d) if d.itt == inquiry.itt && d.data.len() >= 36 => Some(d),
            _ => None,
        })
        .expect("standard INQUIRY data");
    assert_eq!(&data_in.data[8..11], b"IET", "tgtd's vendor id");
    assert!(data_in.final_);
    // tgtd sends status in the final Data-In (phase collapse).
    if let Some(status) = data_in.status {
        assert_eq!(status, 0);
        assert_eq!(data_in.stat_sn, inquiry.exp_stat_sn);
    }
    assert_eq!(data_in.buffer_offset, 0);
    assert!(matches!(c.i2t.last(), Some(Pdu::LogoutRequest(_))));
    let Some(Pdu::LogoutResponse(lr)) = c.t2i.last() else {
        panic!("no logout response");
    };
    assert_eq!(lr.response.0, 0);
}

#[test]
fn read_capacity_16() {
    let d = decode_scenario("readcap");
    let cmd = all(&d)
        .find_map(|p| match p {
            Pdu::ScsiCommand(c) if c.cdb[0] == 0x9e => Some(c),
            _ => None,
        })
        .expect("READ CAPACITY (16)");
    let data = all(&d)
        .find_map(|p| match p {
            Pdu::DataIn(d) if d.itt == cmd.itt => Some(d),
            _ => None,
        })
        .expect("capacity data");
    // 4 MiB backing file, 512-byte blocks: last LBA 8191.
    assert_eq!(&data.data[..8], &8191u64.to_be_bytes());
    assert_eq!(&data.data[8..12], &512u32.to_be_bytes());
}

#[test]
fn chap_login() {
    let d = decode_scenario("chap");
    let reqs: Vec<_> = all(&d)
        .filter_map(|p| match p {
            Pdu::LoginRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    let resps: Vec<_> = all(&d)
        .filter_map(|p| match p {
            Pdu::LoginResponse(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(reqs.len() >= 3, "security exchange takes several PDUs");
    assert!(reqs.iter().any(|r| text_has_prefix(&r.data, "CHAP_A=")));
    assert!(reqs
        .iter()
        .any(|r| text_has(&r.data, "CHAP_N=vectoruser") && text_has_prefix(&r.data, "CHAP_R=")));
    assert!(resps.iter().any(|r| text_has(&r.data, "CHAP_A=5")));
    assert!(resps.iter().any(|r| text_has_prefix(&r.data, "CHAP_C=")));
    assert!(resps.iter().all(|r| r.status_class == 0));
    // The TSIH is 0 until the final response assigns it.
    assert_eq!(reqs[0].tsih, 0);
    assert!(resps
        .iter()
        .any(|r| r.transit && r.nsg == Stage::FullFeaturePhase && r.tsih != 0));
    assert!(count(&d, Opcode::SCSI_COMMAND) > 0);
}

#[test]
fn header_digests_from_real_peers() {
    let d = decode_scenario("hdigest");
    assert!(d[0].digests.header && !d[0].digests.data);
    // decode_stream verified the digest of every FFP PDU and re-encoded it
    // byte-exactly: the CRC32C wire order matches tgtd's and libiscsi's.
    assert!(count(&d, Opcode::SCSI_COMMAND) > 0);
    assert!(count(&d, Opcode::DATA_IN) > 0);
}

#[test]
fn write_with_r2t_and_data_out() {
    let d = decode_scenario("write");
    let r2ts: Vec<_> = all(&d)
        .filter_map(|p| match p {
            Pdu::R2t(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(!r2ts.is_empty());
    for r2t in &r2ts {
        // Every R2T is answered by Data-Out PDUs with its TTT covering the
        // requested range.
        let covered: u32 = all(&d)
            .filter_map(|p| match p {
                Pdu::DataOut(o) if o.itt == r2t.itt && o.ttt == r2t.ttt => Some(o),
                _ => None,
            })
            .map(|o| {
                assert!(o.buffer_offset >= r2t.buffer_offset);
                o.data.len() as u32
            })
            .sum();
        assert_eq!(covered, r2t.desired_data_transfer_length);
    }
    let writes = all(&d)
        .filter(|p| matches!(p, Pdu::ScsiCommand(c) if c.write))
        .count();
    assert!(writes > 0);
    // Some residual tests end with an underflow/overflow in the response.
    assert!(all(&d).any(|p| matches!(p, Pdu::ScsiResponse(r) if r.underflow || r.overflow)));
}

#[test]
fn task_management() {
    let d = decode_scenario("tmf");
    let tmf = all(&d)
        .find_map(|p| match p {
            Pdu::TaskMgmtRequest(t) => Some(t),
            _ => None,
        })
        .expect("TMF request");
    assert_eq!(tmf.function, proto::pdu::TmfFunction::ABORT_TASK);
    assert!(tmf.immediate);
    let resp = all(&d)
        .find_map(|p| match p {
            Pdu::TaskMgmtResponse(t) if t.itt == tmf.itt => Some(t),
            _ => None,
        })
        .expect("TMF response");
    assert!(resp.response.is_known());
}

#[test]
fn check_condition_with_sense_data() {
    // The first command of a new session gets a UNIT ATTENTION from tgtd.
    let d = decode_scenario("cmdsn");
    let rsp = all(&d)
        .find_map(|p| match p {
            Pdu::ScsiResponse(r) if r.status == 0x02 => Some(r),
            _ => None,
        })
        .expect("CHECK CONDITION");
    assert_eq!(rsp.response, 0);
    let sense = rsp.sense().expect("sense data");
    assert_eq!(sense.len(), 18);
    assert_eq!(sense[0] & 0x7f, 0x70, "fixed format, current");
    assert_eq!(sense[2] & 0x0f, 0x06, "UNIT ATTENTION");
    assert_eq!(
        sense[12], 0x29,
        "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED"
    );
}

#[test]
fn data_out_with_invalid_data_sn() {
    // libiscsi's iSCSIDataSnInvalid test sends Data-Out PDUs whose DataSN is
    // not the expected one (RFC 7143 §11.7.5: DataSN starts at 0 for each R2T).
    let d = decode_scenario("datasn");
    let outs: Vec<_> = all(&d)
        .filter_map(|p| match p {
            Pdu::DataOut(o) => Some(o),
            _ => None,
        })
        .collect();
    assert!(outs.iter().any(|o| o.data_sn.get() == 0xffff_ffff));
    assert!(outs
        .iter()
        .any(|o| o.buffer_offset == 0 && o.data_sn.get() != 0));
    assert!(outs.iter().all(|o| o.data.len() == 512));
    for o in &outs {
        let r2t_ttts: Vec<u32> = all(&d)
            .filter_map(|p| match p {
                Pdu::R2t(r) if r.itt == o.itt => Some(r.ttt),
                _ => None,
            })
            .collect();
        assert!(r2t_ttts.contains(&o.ttt), "Data-Out answers an R2T");
    }
}
