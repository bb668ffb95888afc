//! The consumer domain: consumers and the rules they are verified by. Pure: no I/O.

pub mod consumer;
