//! The table: one column per N (and form of ids), as Markdown, so it can go into the README as printed.

use std::fmt::Write;
use std::time::Duration;

use crate::column::{Beside, Initial, Small};
use crate::fill::Filled;
use crate::mail::Ids;
use crate::procs::{AgentRun, BATCH};

/// Everything measured at one N with ids of one form.
pub struct Measured {
    pub n: usize,
    pub ids: Ids,
    pub app_fill: Filled,
    /// The same raw insert with a commit every batch: the price of per-batch atomicity alone.
    pub per_batch: Filled,
    /// The same rows into the store's own tables, a commit every batch, no sync logic.
    pub store_tables: Filled,
    /// The rounds of the limit and the initial sync, in the order they ran.
    pub initial: Vec<InitialSync>,
    pub noop: Repeated,
    pub changes: Repeated,
    /// The same small sessions at the smallest N, each run in turn with one of these; none in
    /// the smallest N's own column.
    pub beside: Option<Beside>,
    /// Peak RSS (VmHWM) of the synchronizer and the collector over all sessions.
    pub rss: (u64, u64),
    pub store_bytes: u64,
}

/// One round: the limit, then the initial sync into an empty destination right after it.
pub struct InitialSync {
    /// The limit: a raw one-transaction insert of the same rows.
    pub limit: Filled,
    pub run: AgentRun,
    /// The destination's last checkpoint, after `agent sync` returned: what the collector's
    /// checkpointer had still to copy into the database file.
    pub last_checkpoint: Duration,
    /// CPU time the synchronizer and the collector spent in the sync.
    pub cpu: (Duration, Duration),
}

impl InitialSync {
    /// The sync timed as the limit is: until every row is in the destination's database file.
    fn total(&self) -> Duration {
        self.run.wall + self.last_checkpoint
    }

    fn ratio(&self) -> f64 {
        ratio(self.total(), self.limit.took)
    }
}

impl Measured {
    /// A finished column: `done` is its daemons' peak RSS and the destination's size.
    pub fn new(
        n: usize,
        ids: Ids,
        initial: Initial,
        small: Small,
        done: ((u64, u64), u64),
    ) -> Self {
        Measured {
            n,
            ids,
            app_fill: initial.app_fill,
            per_batch: initial.per_batch,
            store_tables: initial.store_tables,
            initial: initial.rounds,
            noop: small.noop,
            changes: small.changes,
            beside: small.beside,
            rss: done.0,
            store_bytes: done.1,
        }
    }

    /// The round whose ratio to its limit is the median of the rounds'.
    fn median_round(&self) -> &InitialSync {
        let mut order: Vec<&InitialSync> = self.initial.iter().collect();
        order.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        order[order.len() / 2]
    }

    /// The median of the rounds' limits.
    fn limit(&self) -> Duration {
        median(self.initial.iter().map(|r| r.limit.took))
    }

    /// The median of the rounds' initial syncs, each to its last checkpoint.
    fn initial_total(&self) -> Duration {
        median(self.initial.iter().map(InitialSync::total))
    }

    fn bytes(&self) -> u64 {
        self.initial.first().map_or(0, |r| r.limit.bytes)
    }
}

fn median(values: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Median (min–max) of durations in seconds; a single value alone.
fn spread_secs(values: impl Iterator<Item = Duration>) -> String {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    match v.len() {
        0 => "n/a".into(),
        1 => secs(v[0]),
        len => format!(
            "{} ({:.2}–{:.2})",
            secs(v[len / 2]),
            v[0].as_secs_f64(),
            v[len - 1].as_secs_f64()
        ),
    }
}

/// Repeated runs of one kind of session.
#[derive(Default)]
pub struct Repeated {
    wall: Vec<Duration>,
    session: Vec<Duration>,
}

impl Repeated {
    pub fn push(&mut self, run: &AgentRun) {
        self.wall.push(run.wall);
        if let Some(s) = run.session {
            self.session.push(s);
        }
    }
}

/// This column's sessions each over the one run in turn with it at the smallest N: the median
/// (min–max) of the pairs' ratios.
fn paired_ratio(own: &Repeated, beside: &Repeated) -> String {
    let mut v: Vec<f64> = own
        .wall
        .iter()
        .zip(&beside.wall)
        .map(|(a, b)| ratio(*a, *b))
        .collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => "n/a".into(),
        1 => format!("**{:.2}×**", v[0]),
        len => format!("**{:.2}×** ({:.2}–{:.2})", v[len / 2], v[0], v[len - 1]),
    }
}

/// A row's value for the sessions beside a column: `f` of them, or what stands in their place.
fn beside_or(m: &Measured, f: impl Fn(&Beside) -> String) -> String {
    match &m.beside {
        Some(b) => f(b),
        None => "(the smallest N)".into(),
    }
}

/// Median, min and max, in ms.
fn spread(values: &[Duration]) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    let mut v: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    format!("{median:.0} ms ({:.0}–{:.0})", v[0], v[v.len() - 1])
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn n_label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("N = {}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("N = {}k", n / 1_000),
        n => format!("N = {n}"),
    }
}

/// The whole report: the machine, then the table.
pub fn render(columns: &[Measured], reps: usize, rounds: usize) -> String {
    let of_rounds = match rounds {
        1 => String::new(),
        k => format!(", median (min–max) of {k} rounds"),
    };
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&Measured) -> String| {
        rows.push((label.to_string(), columns.iter().map(f).collect()));
    };
    row("messages (MB of message data)", &|m| {
        format!("{} ({:.1} MB)", count(m.n), m.bytes() as f64 / 1e6)
    });
    row(
        &format!("**limit**: raw insert, one transaction, and its checkpoint{of_rounds}"),
        &|m| {
            format!(
                "{} · {:.0} MB/s",
                spread_secs(m.initial.iter().map(|r| r.limit.took)),
                mb_per_s(m.bytes(), m.limit())
            )
        },
    );
    row("  of which its checkpoint", &|m| {
        spread_secs(m.initial.iter().map(|r| r.limit.checkpoint))
    });
    row(
        &format!("raw insert, a commit every {BATCH} rows (the batch)"),
        &|m| limit_ratio(&m.per_batch, m),
    );
    row(
        &format!("the store's tables (rows + sync metadata), a commit every {BATCH}"),
        &|m| limit_ratio(&m.store_tables, m),
    );
    row("app fill of the source (through the triggers)", &|m| {
        limit_ratio(&m.app_fill, m)
    });
    row(
        &format!("**initial sync**, `agent sync` and the last checkpoint{of_rounds}"),
        &|m| spread_secs(m.initial.iter().map(InitialSync::total)),
    );
    row("  `agent sync` wall", &|m| {
        spread_secs(m.initial.iter().map(|r| r.run.wall))
    });
    row("  the destination's last checkpoint, after it", &|m| {
        spread_secs(m.initial.iter().map(|r| r.last_checkpoint))
    });
    row("  session as recorded by the agent (median round)", &|m| {
        m.median_round().run.session.map_or("n/a".into(), secs)
    });
    row(
        &format!("  **ratio to the limit** (each round to its own limit{of_rounds})"),
        &|m| {
            let mut v: Vec<f64> = m.initial.iter().map(InitialSync::ratio).collect();
            v.sort_by(f64::total_cmp);
            match v.len() {
                0 => "n/a".into(),
                1 => format!("**{:.2}×**", v[0]),
                len => format!("**{:.2}×** ({:.2}–{:.2})", v[len / 2], v[0], v[len - 1]),
            }
        },
    );
    row(
        "  ratio to the store's tables (the sync's own work)",
        &|m| format!("{:.1}×", ratio(m.initial_total(), m.store_tables.took)),
    );
    row("  messages/s", &|m| {
        count((m.n as f64 / m.initial_total().as_secs_f64().max(1e-9)) as usize)
    });
    row("  MB/s of message data", &|m| {
        format!("{:.1}", mb_per_s(m.bytes(), m.initial_total()))
    });
    row("  CPU synchronizer / collector (median round)", &|m| {
        let cpu = m.median_round().cpu;
        format!("{} / {}", secs(cpu.0), secs(cpu.1))
    });
    row(
        &format!("no-op session, median (min–max) of {reps}"),
        &|m| spread(&m.noop.wall),
    );
    row("  as recorded by the agent", &|m| spread(&m.noop.session));
    row(
        &format!("300-change session, median (min–max) of {reps}"),
        &|m| spread(&m.changes.wall),
    );
    row("  as recorded by the agent", &|m| {
        spread(&m.changes.session)
    });
    row(
        "no-op session at the smallest N, each in turn with one of this column's",
        &|m| beside_or(m, |b| format!("{}: {}", n_label(b.n), spread(&b.noop.wall))),
    );
    row(
        "  **ratio**: this column's to it (median (min–max) of the pairs)",
        &|m| beside_or(m, |b| paired_ratio(&m.noop, &b.noop)),
    );
    row(
        "300-change session at the smallest N, each in turn with one of this column's",
        &|m| {
            beside_or(m, |b| {
                format!("{}: {}", n_label(b.n), spread(&b.changes.wall))
            })
        },
    );
    row(
        "  **ratio**: this column's to it (median (min–max) of the pairs)",
        &|m| beside_or(m, |b| paired_ratio(&m.changes, &b.changes)),
    );
    row("peak RSS synchronizer", &|m| mib(m.rss.0));
    row("peak RSS collector", &|m| mib(m.rss.1));
    row("peak RSS agent (initial sync)", &|m| {
        m.initial
            .iter()
            .filter_map(|r| r.run.peak_rss)
            .max()
            .map_or("n/a (needs /usr/bin/time)".into(), mib)
    });
    row("destination store file", &|m| mib(m.store_bytes));

    let mut out = String::new();
    let _ = writeln!(out, "{}", machine());
    let _ = writeln!(out);
    let header: Vec<String> = columns
        .iter()
        .map(|m| format!("{}, {} ids", n_label(m.n), m.ids.name()))
        .collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
    for (label, values) in rows {
        let _ = writeln!(out, "| {label} | {} |", values.join(" | "));
    }
    let _ = writeln!(
        out,
        "\nWall times include starting the agent process; \"recorded\" is the session's own start and end \
         in the agent's state file (ms resolution). MB = 10^6 bytes of ids, subjects, senders, headers and bodies. \
         Each timed step starts after sync(1), with no dirty pages left by the step before it, \
         and ends with every row in the database file: the inserts with a checkpoint of what \
         their WAL still holds, the initial sync with one of the destination's after `agent sync` \
         returned (the collector checkpoints in the background and may leave a few batches' \
         pages behind). \
         Ids: `exchange` = the store's GUID and a growing 6-byte counter (Exchange's source keys), \
         `random` = 128 random bits."
    );
    out
}

/// A reference insert's time and its ratio to the limit.
fn limit_ratio(reference: &Filled, m: &Measured) -> String {
    format!(
        "{} · {:.1}× limit",
        secs(reference.took),
        ratio(reference.took, m.limit())
    )
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// The date, the cores and the CPU model, and SQLite's version.
fn machine() -> String {
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let build = if cfg!(debug_assertions) {
        ", DEBUG build: a smoke run, its timings mean nothing"
    } else {
        ", release build"
    };
    format!(
        "icsync-bench, {today}: {cores} cores ({cpu}), SQLite {}{build}",
        rusqlite::version()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeated(ms: &[u64]) -> Repeated {
        let mut r = Repeated::default();
        for &ms in ms {
            r.push(&AgentRun {
                wall: Duration::from_millis(ms),
                session: None,
                sent: 0,
                peak_rss: None,
            });
        }
        r
    }

    #[test]
    fn pairs_are_compared_one_by_one_not_median_to_median() {
        // Each pair's ratio is 1.2× while the machine slows down under both.
        let own = repeated(&[12, 30, 36]);
        let beside = repeated(&[10, 25, 30]);
        assert_eq!(paired_ratio(&own, &beside), "**1.20×** (1.20–1.20)");
        // One slow session of this column: the medians alone would say 30 / 20 = 1.5×; two of
        // the three pairs say 1.0×.
        let own = repeated(&[10, 40, 30]);
        let beside = repeated(&[10, 20, 30]);
        assert_eq!(paired_ratio(&own, &beside), "**1.00×** (1.00–2.00)");
        assert_eq!(paired_ratio(&repeated(&[]), &beside), "n/a");
    }
}
