//! The accounting domain: accounts and their card authorizations. Pure: no I/O.

pub mod account;
