//! chap
