//! The non-SCSI exchanges of a target connection: NOP-Out/NOP-In and our
//! pings (RFC 7143 §11.18, §11.19), Text requests with the C bit and long
//! responses continued by TTT (§11.10, §11.11), Logout (§11.14, §11.15),
//! Task Management (§11.5, §11.6) and the Async Message asking for a
//! logout (§11.9.1).
//!
//! Each request-carrying PDU goes through the session's CmdSN window
//! first; a counted one frees its slot when it is answered.

use std::time::Instant;

use bytes::Bytes;

use super::{CloseReason, Event, Ping, TargetConn, TargetSession};
use crate::pdu::{
    AsyncEvent, AsyncMessage, DigestConfig, LogoutReason, LogoutRequest, LogoutResponse,
    LogoutResponseCode, NopIn, NopOut, Pdu, RejectReason, TaskMgmtRequest, TaskMgmtResponse,
    TextRequest, TextResponse, RESERVED_TAG,
};
use crate::serial::{CmdSn, StatSn};
use crate::text::{TextAccumulator, TextSender};

/// Largest Text request we join from C-bit PDUs.
const MAX_TEXT_REQUEST: usize = 64 * 1024;

/// Text exchange state: a multi-PDU request being received, or a long
/// response being sent in pieces (§11.10.2, C bit).
#[derive(Debug, Default)]
pub(super) struct TextState {
    request: Option<TextAccumulator>,
    /// (TTT, remaining segments) of a response being continued.
    sending: Option<(u32, TextSender)>,
    /// The request waiting for the shell's answer.
    answering: Option<Answering>,
}

#[derive(Debug)]
struct Answering {
    itt: u32,
    lun: u64,
    counted: bool,
    /// The request's header, for a Reject.
    header: Bytes,
}

/// A Logout request for the shell to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequested {
    pub itt: u32,
    pub reason: LogoutReason,
    /// The CID to close (reason 1, 2), as sent.
    pub cid: u16,
    /// Whether the request names this connection or its whole session.
    pub own: bool,
}

/// The shell's answer to a Logout request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutDecision {
    pub response: LogoutResponseCode,
    /// Close this connection once the response is sent.
    pub close: bool,
}

impl LogoutRequested {
    /// The answer at ErrorRecoveryLevel 0 for a request that names this
    /// connection or the session (the shell decides about other CIDs).
    pub fn decide_own(&self) -> LogoutDecision {
        if self.reason == LogoutReason::CLOSE_SESSION
            || self.reason == LogoutReason::CLOSE_CONNECTION
        {
            LogoutDecision {
                response: LogoutResponseCode::CLOSED_SUCCESSFULLY,
                close: self.own,
            }
        } else {
            // Reason 2 (remove the connection for recovery) needs
            // ErrorRecoveryLevel 2.
            LogoutDecision {
                response: LogoutResponseCode::CONNECTION_RECOVERY_NOT_SUPPORTED,
                close: false,
            }
        }
    }
}

impl<S: TargetSession> TargetConn<S> {
    pub(super) fn send_ping(&mut self, now: Instant) {
        // §11.19: a NOP-In with a valid TTT asks for a NOP-Out echoing the
        // TTT (and the LUN); ITT is reserved.
        let ttt = self.ttts.allocate();
        self.ping = Some(Ping { ttt, sent: now });
        self.queue(NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data: Bytes::new(),
        });
    }

    pub(super) fn nop_out(&mut self, n: NopOut) {
        if n.ttt != RESERVED_TAG && self.ping.map(|p| p.ttt) == Some(n.ttt) {
            // The answer to our ping (§11.18: echoes TTT and LUN).
            self.ping = None;
        }
        // §11.18.3: a NOP-Out answering a NOP-In carries a reserved ITT and
        // needs no answer of its own.
        if n.itt == RESERVED_TAG {
            return;
        }
        let Some(counted) = self.admit(n.cmd_sn, n.immediate) else {
            return;
        };
        // §11.19: the NOP-In answering a NOP-Out returns the ITT, a
        // reserved TTT, the LUN, and the ping data.
        let mut data = n.data;
        data.truncate(self.config.data_in.max_send_data_segment_length as usize);
        if counted {
            self.session.release_slot();
        }
        self.queue(NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data,
        });
    }

    pub(super) fn text_request(&mut self, t: TextRequest) {
        let Some(counted) = self.admit(t.cmd_sn, t.immediate) else {
            return;
        };
        if !self.text_pdu(t, counted) && counted {
            self.session.release_slot();
        }
    }

    /// Returns whether the request waits for the shell's answer (and keeps
    /// its window slot until then).
    fn text_pdu(&mut self, t: TextRequest, counted: bool) -> bool {
        // Continuation of a long response: an empty request with our TTT.
        if t.ttt != RESERVED_TAG {
            match self.text.sending.take() {
                Some((ttt, sender)) if ttt == t.ttt => {
                    self.send_text_segment(t.itt, t.lun, ttt, sender)
                }
                // §11.10.4: an unknown TTT is answered with a Reject.
                _ => self.reject_pdu(RejectReason::INVALID_PDU_FIELD, &Pdu::TextRequest(t)),
            }
            return false;
        }
        // A new request replaces any response still being continued.
        self.text.sending = None;
        let acc = self
            .text
            .request
            .get_or_insert_with(|| TextAccumulator::new(MAX_TEXT_REQUEST));
        match acc.push(&t.data, t.continue_) {
            Ok(Some(keys)) => {
                self.text.request = None;
                let header = Pdu::TextRequest(t.clone())
                    .encode(DigestConfig::NONE)
                    .header;
                self.text.answering = Some(Answering {
                    itt: t.itt,
                    lun: t.lun,
                    counted,
                    header,
                });
                self.events.push_back(Event::Text {
                    itt: t.itt,
                    lun: t.lun,
                    keys,
                });
                true
            }
            Ok(None) => {
                // §11.10.2: answer each C=1 PDU with an empty response so the
                // initiator sends the rest.
                let ttt = self.ttts.allocate();
                self.queue(TextResponse {
                    final_: false,
                    continue_: false,
                    lun: t.lun,
                    itt: t.itt,
                    ttt,
                    stat_sn: StatSn::new(0),
                    exp_cmd_sn: CmdSn::new(0),
                    max_cmd_sn: CmdSn::new(0),
                    data: Bytes::new(),
                });
                false
            }
            Err(_) => {
                self.text.request = None;
                self.reject_pdu(RejectReason::PROTOCOL_ERROR, &Pdu::TextRequest(t));
                false
            }
        }
    }

    /// The answer to [`Event::Text`] `itt`: the key=value text, sent in
    /// segments of at most the initiator's MaxRecvDataSegmentLength.
    pub fn text_response(&mut self, itt: u32, text: Bytes) {
        let Some(a) = self.take_text_answer(itt) else {
            return;
        };
        let (lun, counted) = (a.lun, a.counted);
        let max = self.config.data_in.max_send_data_segment_length as usize;
        let sender = TextSender::new(text, max);
        let ttt = if sender.has_more() {
            self.ttts.allocate()
        } else {
            RESERVED_TAG
        };
        if counted {
            self.session.release_slot();
        }
        self.send_text_segment(itt, lun, ttt, sender);
    }

    /// The shell could not process Text request `itt` (bad keys, failed
    /// negotiation): answer with a Reject (§11.17.1 protocol error).
    pub fn text_reject(&mut self, itt: u32) {
        let Some(a) = self.take_text_answer(itt) else {
            return;
        };
        if a.counted {
            self.session.release_slot();
        }
        self.reject(RejectReason::PROTOCOL_ERROR, a.header);
    }

    fn take_text_answer(&mut self, itt: u32) -> Option<Answering> {
        match &self.text.answering {
            Some(a) if a.itt == itt => self.text.answering.take(),
            _ => None,
        }
    }

    fn send_text_segment(&mut self, itt: u32, lun: u64, ttt: u32, mut sender: TextSender) {
        let (data, more) = sender.next_segment().unwrap_or((Bytes::new(), false));
        if more {
            self.text.sending = Some((ttt, sender));
        }
        self.queue(TextResponse {
            final_: !more,
            continue_: more,
            lun,
            itt,
            ttt: if more { ttt } else { RESERVED_TAG },
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data,
        });
    }

    pub(super) fn logout_request(&mut self, l: LogoutRequest) {
        let Some(counted) = self.admit(l.cmd_sn, l.immediate) else {
            return;
        };
        self.held.insert(l.itt, counted);
        let reason = l.reason_code;
        let own = reason == LogoutReason::CLOSE_SESSION
            || (reason == LogoutReason::CLOSE_CONNECTION && l.cid == self.config.cid);
        self.events.push_back(Event::Logout(LogoutRequested {
            itt: l.itt,
            reason,
            cid: l.cid,
            own,
        }));
    }

    /// Answer Logout request `itt`. With `close`, the connection closes
    /// once the response is sent ([`Event::Closed`]).
    pub fn logout_response(&mut self, itt: u32, d: LogoutDecision) {
        let Some(counted) = self.held.remove(&itt) else {
            return;
        };
        if counted {
            self.session.release_slot();
        }
        // §11.15: Time2Wait/Time2Retain are 0 at ERL 0 (no connection
        // recovery is possible).
        self.queue(LogoutResponse {
            response: d.response,
            itt,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            time2wait: 0,
            time2retain: 0,
            data: Bytes::new(),
        });
        if d.close {
            self.close(CloseReason::LoggedOut);
        }
    }

    pub(super) fn tmf_request(&mut self, t: TaskMgmtRequest) {
        let Some(counted) = self.admit(t.cmd_sn, t.immediate) else {
            return;
        };
        self.held.insert(t.itt, counted);
        self.events.push_back(Event::TaskManagement(t));
    }

    /// Answer a Task Management request (after its affected tasks ended,
    /// §4.2.3.3).
    pub fn tmf_response(&mut self, resp: TaskMgmtResponse) {
        if let Some(true) = self.held.remove(&resp.itt) {
            self.session.release_slot();
        }
        self.queue(resp);
    }

    /// The connection is ending: the requests it holds (TMF, Logout) will
    /// never be answered on it, so the window slots they hold go back to
    /// the session (RFC 7143 §4.2.2.1: the window is session-wide, and
    /// the other connections of an MC/S session go on).
    pub fn release_held(&mut self) {
        for (_, counted) in self.held.drain() {
            if counted {
                self.session.release_slot();
            }
        }
    }

    /// Ask the initiator to log out within `seconds` (§11.9.1 AsyncEvent 1:
    /// "the initiator MUST honor this request by issuing a Logout as early
    /// as possible but no later than Parameter3 seconds").
    pub fn request_logout(&mut self, seconds: u16) {
        self.queue(AsyncMessage {
            lun: 0,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            async_event: AsyncEvent::LOGOUT_REQUEST,
            async_vcode: 0,
            parameter1: 0,
            parameter2: 0,
            parameter3: seconds,
            data: Bytes::new(),
        });
    }
}
