//! FTGO on one machine: the pieces `ftgo-local` (`just up`, `just demo`, `just down`) is made of,
//! also used by the tests that run the whole system as separate processes (the fault-injection
//! test kills and restarts them).

pub mod demo;
pub mod services;
