//! Discovery sessions (RFC 7143 §4.3, §13.3 SendTargets, Appendix C):
//! log in with `SessionType=Discovery`, send `SendTargets=All` in a Text
//! Request, collect the (possibly continued, §11.10.2) Text Responses, then
//! log out.

use std::time::Duration;

use bytes::Bytes;
use proto::pdu::{LogoutReason, LogoutRequest, Pdu, TextRequest, TextResponse};
use proto::serial::{CmdSn, StatSn};
use proto::text::discovery::{parse_send_targets, send_targets_text, SendTargetsQuery};
use proto::text::{KeyValue, TextAccumulator};

use crate::connection::{self, Established, LoginSpec};
use crate::error::{Error, ProtocolError, Rejection, Result, TimedOut};
use crate::portal::Portal;
use crate::session::{ChapConfig, Offer, RESERVED_TAG};

/// One discovered target with its portals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveredTarget {
    pub name: String,
    pub alias: Option<String>,
    /// `(host:port, portal group tag)`.
    pub portals: Vec<(String, u16)>,
}

/// Discovery parameters.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub portal: Portal,
    pub initiator_name: String,
    pub chap: Option<ChapConfig>,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
}

impl DiscoveryConfig {
    pub fn new(portal: Portal, initiator_name: impl Into<String>) -> Self {
        DiscoveryConfig {
            portal,
            initiator_name: initiator_name.into(),
            chap: None,
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
        }
    }
}

/// Upper bound on the total SendTargets answer we accept.
const MAX_TEXT: usize = 1 << 20;

/// Ask a portal for every target it exposes.
pub async fn discover(cfg: &DiscoveryConfig) -> Result<Vec<DiscoveredTarget>> {
    let mut est = connection::login(&discovery_spec(cfg)).await?;
    let itt = 1u32;
    let (pairs, sns) = send_targets(&mut est, itt, cfg.login_timeout).await?;
    let targets = parse_send_targets(&pairs).map_err(ProtocolError::SendTargetsAnswer)?;
    // Best-effort logout (RFC 7143 §11.14); the answer is already in hand.
    let logout = Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason_code: LogoutReason::CLOSE_SESSION,
        itt: itt + 1,
        cid: 0,
        cmd_sn: sns.cmd_sn,
        exp_stat_sn: sns.exp_stat_sn,
        data: Bytes::new(),
    });
    if est.writer.write(&logout).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), est.reader.read()).await;
    }
    est.writer.shutdown().await;
    Ok(targets
        .into_iter()
        .map(|t| DiscoveredTarget {
            name: t.name,
            alias: t.alias,
            portals: t.addresses,
        })
        .collect())
}

/// The login of a discovery session (a random ISID, first CmdSN 1).
fn discovery_spec(cfg: &DiscoveryConfig) -> LoginSpec {
    let r: [u8; 6] = rand::random();
    LoginSpec {
        portal: cfg.portal.clone(),
        initiator_name: cfg.initiator_name.clone(),
        target_name: None,
        isid: [0x80 | (r[0] & 0x3f), r[1], r[2], r[3], r[4], r[5]],
        tsih: 0,
        cid: 0,
        cmd_sn: CmdSn::new(1),
        chap: cfg.chap.clone(),
        offer: Offer::default(),
        max_connections: 1,
        connect_timeout: cfg.connect_timeout,
        login_timeout: cfg.login_timeout,
    }
}

/// Where the session's sequence numbers stand after the text exchange.
struct SeqNumbers {
    cmd_sn: CmdSn,
    exp_stat_sn: StatSn,
}

/// `SendTargets=All` and its (possibly continued) answer, as key=value pairs.
async fn send_targets(
    est: &mut Established,
    itt: u32,
    timeout: Duration,
) -> Result<(Vec<KeyValue>, SeqNumbers)> {
    let mut sns = SeqNumbers {
        cmd_sn: est.exp_cmd_sn,
        exp_stat_sn: est.exp_stat_sn,
    };
    let mut ttt = RESERVED_TAG;
    let mut data = send_targets_text(&SendTargetsQuery::All);
    let mut acc = TextAccumulator::new(MAX_TEXT);
    let mut pairs = Vec::new();
    for _ in 0..1000 {
        let req = Pdu::TextRequest(TextRequest {
            immediate: false,
            final_: true,
            continue_: false,
            lun: 0,
            itt,
            ttt,
            cmd_sn: sns.cmd_sn,
            exp_stat_sn: sns.exp_stat_sn,
            data: std::mem::take(&mut data),
        });
        est.writer.write(&req).await?;
        let t = text_response(est, timeout).await?;
        sns.exp_stat_sn = t.stat_sn.successor();
        sns.cmd_sn.advance_to(t.exp_cmd_sn);
        // RFC 7143 §11.11.2: C=1 means more text follows; we answer with an
        // empty Text Request carrying the target's TTT.
        let done = acc
            .push(&t.data, t.continue_)
            .map_err(ProtocolError::SendTargetsText)?;
        if let Some(p) = done {
            pairs.extend(p);
        }
        if t.final_ && !t.continue_ {
            return Ok((pairs, sns));
        }
        // RFC 7143 §11.11.1: F=0 means the target has more records for us.
        ttt = t.ttt;
        if pairs.len() > 100_000 {
            return Err(ProtocolError::SendTargetsTooLong.into());
        }
    }
    Err(ProtocolError::DiscoveryEndless.into())
}

/// The next PDU, which must be a Text Response.
async fn text_response(est: &mut Established, timeout: Duration) -> Result<TextResponse> {
    let resp = match tokio::time::timeout(timeout, est.reader.read()).await {
        Err(_) => {
            let what = "Text Response to SendTargets";
            return Err(Error::Timeout(TimedOut::NoAnswer(what)));
        }
        Ok(r) => r?.0,
    };
    match resp {
        Pdu::TextResponse(t) => Ok(t),
        Pdu::Reject(r) => Err(Error::Rejected(Rejection::SendTargets(r.reason))),
        other => Err(ProtocolError::DiscoveryUnexpected(other.opcode()).into()),
    }
}

impl DiscoveredTarget {
    /// iscsiadm-style lines: `HOST:PORT,TPGT IQN`.
    pub fn lines(&self) -> Vec<String> {
        self.portals
            .iter()
            .map(|(a, t)| format!("{a},{t} {}", self.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iscsiadm_lines() {
        let t = DiscoveredTarget {
            name: "iqn.2001-04.com.example:disk".into(),
            alias: None,
            portals: vec![("10.0.0.1:3260".into(), 1), ("[::1]:3261".into(), 2)],
        };
        assert_eq!(
            t.lines(),
            vec![
                "10.0.0.1:3260,1 iqn.2001-04.com.example:disk",
                "[::1]:3261,2 iqn.2001-04.com.example:disk"
            ]
        );
    }
}
