//! icsync's shared library: everything the three processes have in common.
//!
//! A map of the modules, from the pure core outwards:
//!
//! - [`knowledge`]: versions (replica, tick) and knowledge ("A5, B4") — seed 004's metadata,
//!   with seed 003's union / project / exclude. Pure data, no I/O.
//! - [`model`]: folders and messages as they travel: items, change units, phases (seed 002).
//! - [`scope`]: a partnership's scope — folder patterns and whether bodies travel (seed 001's
//!   filter, seed 002's header download). Pure data.
//! - [`store`]: the information store on SQLite — schema and inline change tracking, change
//!   enumeration (seed 001) and the change applier (seed 003).
//! - [`protocol`]: the wire — frames, the buffered connection, one module per message family.
//! - [`ipc`]: local sockets: owner-only listeners, stale-socket recovery, peer-credential checks.
//! - [`shutdown`]: the shutdown signal daemons take, so tests can stop them cleanly.
//!
//! The seeds are the five public documents the product comes from (kept beside the repository,
//! not in it); comments name them by file number (000 Exchange ICS, 001 metadata storage, 002 Outlook replication state
//! machine, 003 applying changes, 004 Sync Framework introduction).

pub mod daemon;
pub mod error;
pub mod failpoint;
pub mod ipc;
pub mod knowledge;
pub mod logging;
pub mod model;
pub mod protocol;
pub mod scope;
pub mod shutdown;
pub mod store;
