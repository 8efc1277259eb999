//! Fuzz target: `decode_frame` over arbitrary bytes (RFC 7143 §11 framing).
//!
//! The first input byte picks the limits (MaxRecvDataSegmentLength and
//! digests); the rest is the receive stream. Asserts: no panic; fatal errors
//! consume nothing, non-fatal ones exactly one PDU; every decoded PDU
//! re-encodes to a frame that decodes back to the same PDU, byte-identically.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::pdu::{decode_frame, DecodeLimits, DigestConfig, Pdu};

fuzz_target!(|input: &[u8]| {
    let Some((&sel, stream)) = input.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_data_segment_length: [0, 512, 8192, 1 << 24][usize::from(sel & 3)],
        digests: DigestConfig {
            header: sel & 4 != 0,
            data: sel & 8 != 0,
        },
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, &limits) {
            Ok(Some(pdu)) => {
                assert!(buf.len() < before);
                let wire = pdu.encode(limits.digests).to_bytes();
                let back =
                    Pdu::decode(wire.clone(), limits.digests).expect("re-encoded PDU decodes");
                assert_eq!(back, pdu);
                assert_eq!(back.encode(limits.digests).to_bytes(), wire);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(e) if e.is_fatal() => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(e) => {
                assert!(buf.len() < before);
                assert!(e.reject_reason().is_some());
            }
        }
    }
});
