//! Text requests in the full-feature phase (RFC 7143 §11.10): operational
//! key renegotiation and SendTargets (Appendix C). The core joins C-bit
//! PDUs and sends the answer in pieces; this is the target's policy: which
//! keys it accepts and which targets an initiator may see.

use bytes::Bytes;
use proto::text::negotiate::{Negotiator, Role};
use proto::text::KeyValue;
use tracing::debug;

use super::driver::Conn;

impl Conn {
    /// Answer the complete Text request `itt`.
    pub(super) fn text(&mut self, itt: u32, keys: &[KeyValue]) {
        match self.text_answer(keys) {
            Some(text) => self.core.text_response(itt, text),
            None => self.core.text_reject(itt),
        }
    }

    fn text_answer(&mut self, keys: &[KeyValue]) -> Option<Bytes> {
        let local = match &self.session.target {
            Some(t) => crate::login::operational_config(&t.config().limits),
            None => proto::login::params::OperationalConfig::default(),
        };
        let (session_type, conn) = (self.session.params.session_type, self.limits.conn);
        let neg = self.negotiator.get_or_insert_with(|| {
            Negotiator::full_feature(Role::Target, local, session_type, conn)
        });
        let processed = match proto::text::discovery::process_text_request(neg, keys) {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "text negotiation failed");
                return None;
            }
        };
        // A re-declared MaxRecvDataSegmentLength (RFC 7143 §13.12) applies
        // to what we send from now on.
        let peer = neg.connection_params().max_send_data_segment_length;
        if peer >= 512 {
            self.limits.conn.max_send_data_segment_length = peer;
            self.core.set_max_send_data_segment_length(peer);
        }
        let mut answers = processed.answers;
        if let Some(q) = processed.send_targets {
            answers.extend(self.send_targets(&q));
        }
        Some(proto::text::encode_kv(&answers))
    }

    /// SendTargets answer (RFC 7143 Appendix C).
    fn send_targets(&self, query: &str) -> Vec<KeyValue> {
        let q = crate::discovery::SendTargetsQuery::parse(query);
        let targets = self.shared.all_targets();
        let configs: Vec<_> = targets.iter().map(|t| t.config()).collect();
        let refs: Vec<_> = configs.iter().collect();
        let current =
            (!self.session.is_discovery()).then_some(self.session.core.target_name.as_str());
        let found = crate::discovery::send_targets(
            &q,
            &refs,
            &self.session.core.initiator_name,
            current,
            self.local,
        );
        proto::text::discovery::encode_send_targets(&found)
    }
}
