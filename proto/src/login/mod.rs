//! Login and text negotiation state machines (RFC 7143 §6, §13), both roles.

pub mod auth;
