//! Crash points for the end-to-end tests of the kill -9 promise. `ICSYNC_FAILPOINT=NAME:N` makes
//! the process abort (no clean-up, no flush, like `kill -9`) the N-th time it passes the point
//! `NAME`. Unset — always, outside tests — a point costs one relaxed atomic load.
//!
//! Points: `collector-after-commit` (a batch is committed, its success message not yet sent),
//! `synchronizer-after-ack` (a batch is acknowledged, progress not yet sent to the agent),
//! `agent-after-progress` (the agent recorded a batch's knowledge).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSED: AtomicU64 = AtomicU64::new(0);

/// Aborts the process if `name` is armed and this is the armed pass.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("ICSYNC_FAILPOINT").ok()?;
        let (point, n) = spec.split_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    });
    if let Some((point, n)) = armed {
        if point == name && PASSED.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            eprintln!("failpoint {name}:{n} hit: aborting");
            std::process::abort();
        }
    }
}
