//! What every FTGO service needs, written once so that no service carries a copy: its database
//! and migrations ([`db`]) and reliable asynchronous messaging ([`messaging`]).

pub mod db;
pub mod messaging;
