//! The order domain: pure rules, no I/O.

pub mod order;
