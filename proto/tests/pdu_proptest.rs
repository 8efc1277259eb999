//! Property tests: every PDU type survives encode -> decode unchanged, with
//! and without digests, through both `Pdu::decode` and the streaming
//! `decode_frame` (fed in arbitrary chunks), and single-bit corruption under
//! digests is always detected.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proto::pdu::*;
use proto::serial::SerialNumber;

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..70).prop_map(Bytes::from)
}

fn stage() -> impl Strategy<Value = Stage> {
    (0u8..4).prop_map(Stage::from_bits)
}

fn sn() -> impl Strategy<Value = SerialNumber> {
    any::<u32>().prop_map(SerialNumber::new)
}

fn isid() -> impl Strategy<Value = Isid> {
    any::<[u8; 6]>().prop_map(Isid)
}

prop_compose! {
    fn nop_out()(immediate: bool, lun: u64, itt: u32, ttt: u32, cmd_sn in sn(),
                 exp_stat_sn in sn(), data in data()) -> Pdu {
        NopOut { immediate, lun, itt, ttt, cmd_sn, exp_stat_sn, data }.into()
    }
}

prop_compose! {
    fn nop_in()(lun: u64, itt: u32, ttt: u32, stat_sn in sn(), exp_cmd_sn in sn(),
                max_cmd_sn in sn(), data in data()) -> Pdu {
        NopIn { lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data }.into()
    }
}

prop_compose! {
    fn scsi_command()(flags in any::<(bool, bool, bool, bool)>(), attr in 0u8..8, lun: u64,
                      itt: u32, edtl: u32, cmd_sn in sn(), exp_stat_sn in sn(),
                      cdb in prop::collection::vec(any::<u8>(), 16..64),
                      bidi_read_length in proptest::option::of(any::<u32>()),
                      data in data()) -> Pdu {
        let (immediate, final_, read, write) = flags;
        ScsiCommand {
            immediate, final_, read, write, attr: TaskAttr(attr), lun, itt,
            expected_data_transfer_length: edtl, cmd_sn, exp_stat_sn,
            cdb: Bytes::from(cdb), bidi_read_length, data,
        }.into()
    }
}

prop_compose! {
    fn scsi_response()(flags in any::<(bool, bool, bool, bool)>(), response: u8, status: u8,
                       itt: u32, snack_tag: u32, sns in (sn(), sn(), sn(), sn()),
                       counts in any::<(u32, u32)>(), data in data()) -> Pdu {
        let (bidi_overflow, bidi_underflow, overflow, underflow) = flags;
        let (stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn) = sns;
        ScsiResponse {
            bidi_overflow, bidi_underflow, overflow, underflow, response, status, itt,
            snack_tag, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn,
            bidi_read_residual_count: counts.0, residual_count: counts.1, data,
        }.into()
    }
}

prop_compose! {
    fn tmf_request()(immediate: bool, function in 0u8..0x80, lun: u64, itt: u32,
                     rtt: u32, sns in (sn(), sn(), sn(), sn()), data in data()) -> Pdu {
        TaskMgmtRequest {
            immediate, function: TmfFunction(function), lun, itt, referenced_task_tag: rtt,
            cmd_sn: sns.0, exp_stat_sn: sns.1, ref_cmd_sn: sns.2, exp_data_sn: sns.3, data,
        }.into()
    }
}

prop_compose! {
    fn tmf_response()(response: u8, itt: u32, sns in (sn(), sn(), sn()),
                      data in data()) -> Pdu {
        TaskMgmtResponse {
            response: TmfResponse(response), itt, stat_sn: sns.0, exp_cmd_sn: sns.1,
            max_cmd_sn: sns.2, data,
        }.into()
    }
}

prop_compose! {
    fn login_request()(transit: bool, continue_: bool, csg in stage(), nsg in stage(),
                       versions in any::<(u8, u8)>(), isid in isid(), tsih: u16, itt: u32,
                       cid: u16, cmd_sn in sn(), exp_stat_sn in sn(), data in data()) -> Pdu {
        LoginRequest {
            transit, continue_, csg, nsg, version_max: versions.0, version_min: versions.1,
            isid, tsih, itt, cid, cmd_sn, exp_stat_sn, data,
        }.into()
    }
}

prop_compose! {
    fn login_response()(transit: bool, continue_: bool, csg in stage(), nsg in stage(),
                        versions in any::<(u8, u8)>(), isid in isid(), tsih: u16, itt: u32,
                        sns in (sn(), sn(), sn()), status in any::<(u8, u8)>(),
                        data in data()) -> Pdu {
        LoginResponse {
            transit, continue_, csg, nsg, version_max: versions.0, version_active: versions.1,
            isid, tsih, itt, stat_sn: sns.0, exp_cmd_sn: sns.1, max_cmd_sn: sns.2,
            status_class: status.0, status_detail: status.1, data,
        }.into()
    }
}

prop_compose! {
    fn text_request()(immediate: bool, final_: bool, continue_: bool, lun: u64, itt: u32,
                      ttt: u32, cmd_sn in sn(), exp_stat_sn in sn(), data in data()) -> Pdu {
        TextRequest { immediate, final_, continue_, lun, itt, ttt, cmd_sn, exp_stat_sn, data }
            .into()
    }
}

prop_compose! {
    fn text_response()(final_: bool, continue_: bool, lun: u64, itt: u32, ttt: u32,
                       sns in (sn(), sn(), sn()), data in data()) -> Pdu {
        TextResponse {
            final_, continue_, lun, itt, ttt, stat_sn: sns.0, exp_cmd_sn: sns.1,
            max_cmd_sn: sns.2, data,
        }.into()
    }
}

prop_compose! {
    fn data_out()(final_: bool, lun: u64, itt: u32, ttt: u32, exp_stat_sn in sn(), data_sn in sn(),
                  buffer_offset: u32, data in data()) -> Pdu {
        DataOut { final_, lun, itt, ttt, exp_stat_sn, data_sn, buffer_offset, data }.into()
    }
}

prop_compose! {
    fn data_in()(flags in any::<(bool, bool, bool, bool)>(), status: Option<u8>, lun: u64,
                 itt: u32, ttt: u32, sns in (sn(), sn(), sn(), sn()),
                 buffer_offset: u32, residual_count: u32, data in data()) -> Pdu {
        let (final_, ack, overflow, underflow) = flags;
        DataIn {
            final_, ack, overflow, underflow, status, lun, itt, ttt, stat_sn: sns.0,
            exp_cmd_sn: sns.1, max_cmd_sn: sns.2, data_sn: sns.3, buffer_offset,
            residual_count, data,
        }.into()
    }
}

prop_compose! {
    fn logout_request()(immediate: bool, reason in 0u8..0x80, itt: u32, cid: u16, cmd_sn in sn(),
                        exp_stat_sn in sn(), data in data()) -> Pdu {
        LogoutRequest {
            immediate, reason_code: LogoutReason(reason), itt, cid, cmd_sn, exp_stat_sn, data,
        }.into()
    }
}

prop_compose! {
    fn logout_response()(response: u8, itt: u32, sns in (sn(), sn(), sn()),
                         times in any::<(u16, u16)>(), data in data()) -> Pdu {
        LogoutResponse {
            response: LogoutResponseCode(response), itt, stat_sn: sns.0, exp_cmd_sn: sns.1,
            max_cmd_sn: sns.2, time2wait: times.0, time2retain: times.1, data,
        }.into()
    }
}

prop_compose! {
    fn snack()(snack_type in 0u8..16, lun: u64, itt: u32, ttt: u32, exp_stat_sn in sn(),
               beg_run in sn(), run_length: u32, data in data()) -> Pdu {
        SnackRequest {
            snack_type: SnackType(snack_type), lun, itt, ttt, exp_stat_sn, beg_run, run_length,
            data,
        }.into()
    }
}

prop_compose! {
    fn r2t()(lun: u64, itt: u32, ttt: u32, sns in (sn(), sn(), sn(), sn()),
             buffer_offset: u32, desired: u32, data in data()) -> Pdu {
        R2t {
            lun, itt, ttt, stat_sn: sns.0, exp_cmd_sn: sns.1, max_cmd_sn: sns.2, r2t_sn: sns.3,
            buffer_offset, desired_data_transfer_length: desired, data,
        }.into()
    }
}

prop_compose! {
    fn async_message()(lun: u64, sns in (sn(), sn(), sn()), event: u8, vcode: u8,
                       params in any::<(u16, u16, u16)>(), data in data()) -> Pdu {
        AsyncMessage {
            lun, stat_sn: sns.0, exp_cmd_sn: sns.1, max_cmd_sn: sns.2,
            async_event: AsyncEvent(event), async_vcode: vcode, parameter1: params.0,
            parameter2: params.1, parameter3: params.2, data,
        }.into()
    }
}

prop_compose! {
    fn reject()(reason: u8, sns in (sn(), sn(), sn(), sn()), data in data()) -> Pdu {
        Reject {
            reason: RejectReason(reason), stat_sn: sns.0, exp_cmd_sn: sns.1, max_cmd_sn: sns.2,
            data_sn_or_r2t_sn: sns.3, data,
        }.into()
    }
}

fn any_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        nop_out(),
        scsi_command(),
        tmf_request(),
        login_request(),
        text_request(),
        data_out(),
        logout_request(),
        snack(),
        nop_in(),
        scsi_response(),
        tmf_response(),
        login_response(),
        text_response(),
        data_in(),
        logout_response(),
        r2t(),
        async_message(),
        reject(),
    ]
}

fn digests() -> impl Strategy<Value = DigestConfig> {
    any::<(bool, bool)>().prop_map(|(header, data)| DigestConfig { header, data })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(pdu in any_pdu(), digests in digests()) {
        let enc = pdu.encode(digests);
        let wire = enc.to_bytes();
        // Framing invariants: 4-byte alignment, header/digest layout.
        prop_assert_eq!(wire.len() % 4, 0);
        prop_assert_eq!(enc.data.len(), pdu.data().len());
        prop_assert_eq!(usize::from(wire[4]) * 4 + 48 + if digests.header { 4 } else { 0 },
                        enc.header.len());
        prop_assert_eq!(wire[0] & 0x3f, pdu.opcode().0);
        prop_assert_eq!(Pdu::decode(wire.clone(), digests), Ok(pdu.clone()));
        // Re-encoding the decoded PDU gives the same bytes.
        prop_assert_eq!(Pdu::decode(wire.clone(), digests).unwrap().encode(digests).to_bytes(),
                        wire);
    }

    #[test]
    fn streaming_in_chunks(pdus in prop::collection::vec(any_pdu(), 1..6),
                           digests in digests(),
                           chunk in 1usize..97) {
        let mut wire = BytesMut::new();
        for p in &pdus {
            p.encode(digests).write_to(&mut wire);
        }
        let limits = DecodeLimits { max_data_segment_length: 1024, digests };
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            rx.extend_from_slice(piece);
            while let Some(p) = decode_frame(&mut rx, &limits).unwrap() {
                out.push(p);
            }
        }
        prop_assert!(rx.is_empty());
        prop_assert_eq!(out, pdus);
    }

    #[test]
    fn corruption_is_detected_under_digests(pdu in any_pdu(), pos: prop::sample::Index,
                                            bit in 0u8..8) {
        let wire = pdu.encode(DigestConfig::BOTH).to_bytes();
        let mut bad = wire.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        let limits = DecodeLimits { max_data_segment_length: 1 << 24, digests: DigestConfig::BOTH };
        let mut buf = BytesMut::from(&bad[..]);
        match decode_frame(&mut buf, &limits) {
            // A flip in a pad byte is inside the data digest too, so every
            // single-bit flip must be reported.
            Ok(Some(p)) => prop_assert!(false, "undetected flip at {}: {:?}", i, p),
            Ok(None) => {
                // A flip in TotalAHSLength moves the header digest further
                // away: the decoder must wait for it before it can check
                // anything. Every other field is covered before use.
                prop_assert_eq!(i, 4, "flip at {} made the frame look incomplete", i);
            }
            Err(e) => {
                let header_len = usize::from(wire[4]) * 4 + 52;
                if i < header_len {
                    prop_assert!(matches!(e, DecodeError::HeaderDigest { .. }), "{:?}", e);
                    prop_assert!(e.is_fatal());
                } else {
                    prop_assert!(matches!(e, DecodeError::DataDigest { .. }), "{:?}", e);
                    prop_assert!(!e.is_fatal());
                    prop_assert!(buf.is_empty());
                }
            }
        }
    }
}
