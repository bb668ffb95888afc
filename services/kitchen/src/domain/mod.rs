//! The kitchen domain: restaurants with menus, and tickets with their guarded state machine.
//! Pure: no I/O.

pub mod restaurant;
pub mod ticket;
