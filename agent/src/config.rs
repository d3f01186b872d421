//! The agent's configuration file (TOML): types, parsing and validation.
//!
//! # Where the agent's role comes from
//!
//! Seed 000 (Exchange incremental change synchronization) splits synchronization into three
//! processes: a synchronizer that exports changes, a collector that imports them, and an agent
//! that sits between them: "The agent process schedules and configures synchronization. The
//! agent does not require detailed knowledge of the information store. Because more than one
//! schedule for synchronization and more than one set of stores to synchronize may exist, more
//! than one agent may also exist for the same information store." The seed also says "The agent
//! determines where this state information is stored". This file is how an operator tells one
//! agent which stores it talks to (through their synchronizer and collector sockets), which
//! pairs of stores it synchronizes, on what schedule, with which conflict policy, and where it
//! keeps its synchronization-state records.
//!
//! # The format
//!
//! ```toml
//! state = "state/agent.db"                 # the agent's own SQLite file of sync-state records (required)
//! max_sessions = 4                         # optional, default 4: sessions running at once (>= 1)
//!
//! [stores.laptop]
//! synchronizer = "run/laptop.sync.sock"    # required: socket path of this store's synchronizer
//! collector    = "run/laptop.coll.sock"    # required: socket path of this store's collector
//! path  = "data/laptop.db"                 # optional: the store file; with spawn, the agent starts both processes
//! spawn = true                             # optional, default false; spawn = true requires path
//! retention = "30d"                        # optional duration, default none: tombstone cleanup
//! max_body_bytes = 10485760                # optional: bodies over this are item errors
//! synchronizer_bin = "bin/synchronizer"    # optional: the synchronizer program to spawn
//! collector_bin    = "bin/collector"       # optional: the collector program to spawn
//!
//! [stores.server]
//! synchronizer = "run/server.sync.sock"
//! collector    = "run/server.coll.sock"
//!
//! [[partnerships]]
//! name      = "laptop-server"
//! source    = "laptop"
//! destination = "server"
//! direction = "both"        # both | one-way   (default both)
//! every     = "5m"          # or: cron = "*/5 * * * *"  (exactly one of the two is required)
//! conflicts = "defer"       # source-wins | destination-wins | newer-wins | merge | defer  (default defer)
//! batch     = 1000          # changes per batch (default 1000; must be 1..=100000)
//! folders   = ["Inbox", "Projects/**"]   # optional, default: every folder
//! bodies    = true          # optional, default true
//! ```
//!
//! * Relative paths (`state`, the socket paths, `path`, `*_bin`) are relative to the directory
//!   of the config file; absolute paths are kept as written.
//! * Durations (`every`, `retention`) are whole numbers with a unit, `s`, `m`, `h` or `d`,
//!   largest unit first, and may be combined: `"30s"`, `"5m"`, `"2h"`, `"7d"`, `"1h30m"`.
//! * `cron` is a standard 5-field expression (minute hour day-of-month month day-of-week).
//! * Unknown keys are errors, so a misspelt key never silently falls back to a default.
//!
//! Every error ([`ConfigError`]) is one line naming the file, the line and column of the
//! offending value, what is wrong and, where possible, how to fix it:
//!
//! ```text
//! config error in agent.toml:12:15: partnership "laptop-server": unknown store "sever" in destination (known stores: laptop, server)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The origin used for a configuration that does not come from a file.
pub const EMBEDDED_ORIGIN: &str = "<embedded demo config>";

/// Default for `max_sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 4;
/// Default for a partnership's `batch`.
pub const DEFAULT_BATCH: u32 = 1000;
/// Largest accepted `batch`.
pub const MAX_BATCH: u32 = 100_000;

/// A parsed and validated agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config file path as given, or [`EMBEDDED_ORIGIN`].
    pub origin: String,
    /// The directory relative paths were resolved against.
    pub base_dir: PathBuf,
    /// The agent's SQLite file of synchronization-state records.
    pub state: PathBuf,
    /// How many sessions may run at once (at least 1).
    pub max_sessions: usize,
    /// The stores, by name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// The partnerships, in file order.
    pub partnerships: Vec<Partnership>,
}

/// One `[stores.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The table's name (`laptop` in `[stores.laptop]`).
    pub name: String,
    /// Socket path of this store's synchronizer.
    pub synchronizer: PathBuf,
    /// Socket path of this store's collector.
    pub collector: PathBuf,
    /// The store file, if the agent knows it.
    pub path: Option<PathBuf>,
    /// Whether the agent starts this store's synchronizer and collector itself.
    pub spawn: bool,
    /// The store's retention period (`retention = "30d"`), if set: tombstones older than this
    /// are removed by the store's spawned daemons (`--retention`).
    pub retention: Option<Duration>,
    /// Bodies larger than this are not imported (`max_body_bytes`, passed to a spawned
    /// collector as `--max-body-bytes`): an item error until the cap is raised.
    pub max_body_bytes: Option<u64>,
    /// The synchronizer program to spawn, if not the default.
    pub synchronizer_bin: Option<PathBuf>,
    /// The collector program to spawn, if not the default.
    pub collector_bin: Option<PathBuf>,
}

/// One `[[partnerships]]` entry: a pair of stores synchronized on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partnership {
    /// Unique name (what `agent sync NAME` takes).
    pub name: String,
    /// Name of the source store (a key of [`Config::stores`]).
    pub source: String,
    /// Name of the destination store (a key of [`Config::stores`]).
    pub destination: String,
    /// Whether changes flow both ways or only from source to destination.
    pub direction: Direction,
    /// When sessions run.
    pub schedule: Schedule,
    /// How conflicts are resolved.
    pub conflicts: ConflictPolicy,
    /// Changes per batch, in `1..=100000`.
    pub batch: u32,
    /// Folder patterns to synchronize; `None` means every folder.
    pub folders: Option<Vec<String>>,
    /// Whether message bodies are transferred.
    pub bodies: bool,
}

/// Error returned by the [`FromStr`] impls of [`Direction`] and [`ConflictPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {})", .expected.join(", "))]
pub struct ParseNameError {
    what: &'static str,
    value: String,
    expected: &'static [&'static str],
}

/// Which way changes flow in a partnership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Source to destination and destination to source.
    #[default]
    Both,
    /// Source to destination only.
    OneWay,
}

impl Direction {
    /// Every direction, in documentation order.
    pub const ALL: [Direction; 2] = [Direction::Both, Direction::OneWay];
    /// The names accepted in the config file.
    pub const NAMES: &'static [&'static str] = &["both", "one-way"];

    /// The config-file name (`"both"` or `"one-way"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::OneWay => "one-way",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Direction::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| ParseNameError {
                what: "direction",
                value: s.to_string(),
                expected: Direction::NAMES,
            })
    }
}

/// When a partnership's sessions run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// At a fixed interval.
    Every(Duration),
    /// On a 5-field cron expression, kept as written.
    Cron(String),
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", format_duration(*d)),
            Schedule::Cron(expr) => write!(f, "cron {expr}"),
        }
    }
}

/// How the destination's collector resolves a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The source's version wins.
    SourceWins,
    /// The destination's version wins.
    DestinationWins,
    /// The more recent change wins.
    NewerWins,
    /// The two versions are merged.
    Merge,
    /// The destination keeps its value and the conflict comes again every session (seed 004,
    /// "log conflict"); the operator queue to resolve it is not built yet.
    #[default]
    Defer,
}

impl ConflictPolicy {
    /// Every policy, in documentation order.
    pub const ALL: [ConflictPolicy; 5] = [
        ConflictPolicy::SourceWins,
        ConflictPolicy::DestinationWins,
        ConflictPolicy::NewerWins,
        ConflictPolicy::Merge,
        ConflictPolicy::Defer,
    ];
    /// The names accepted in the config file.
    pub const NAMES: &'static [&'static str] = &[
        "source-wins",
        "destination-wins",
        "newer-wins",
        "merge",
        "defer",
    ];

    /// The config-file (and wire) name, e.g. `"newer-wins"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source-wins",
            ConflictPolicy::DestinationWins => "destination-wins",
            ConflictPolicy::NewerWins => "newer-wins",
            ConflictPolicy::Merge => "merge",
            ConflictPolicy::Defer => "defer",
        }
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConflictPolicy {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConflictPolicy::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseNameError {
                what: "conflict policy",
                value: s.to_string(),
                expected: ConflictPolicy::NAMES,
            })
    }
}

const DURATION_FORM: &str =
    "expected a whole number with a unit s, m, h or d, like \"30s\", \"5m\", \"2h\", \"7d\" or \"1h30m\"";

/// Parses a duration such as `"30s"`, `"5m"`, `"2h"`, `"7d"` or `"1h30m"`.
///
/// Units are `d`, `h`, `m` and `s`, each used at most once, largest first. The total must be
/// more than zero. The error message says which form is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_FORM}"));
    }
    let invalid = || format!("invalid duration {s:?}; {DURATION_FORM}");
    let mut total: u64 = 0;
    // Rank of the last unit seen (d = 4 ... s = 1); units must strictly decrease.
    let mut last_rank = u8::MAX;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, tail) = rest.split_at(digits);
        let mut chars = tail.chars();
        let (seconds_per_unit, rank) = match chars.next() {
            Some('d') => (86_400u64, 4u8),
            Some('h') => (3_600, 3),
            Some('m') => (60, 2),
            Some('s') => (1, 1),
            _ => return Err(invalid()),
        };
        if rank >= last_rank {
            return Err(format!(
                "invalid duration {s:?}: give each unit once, largest first; {DURATION_FORM}"
            ));
        }
        last_rank = rank;
        let too_large = || format!("duration {s:?} is too large");
        let value: u64 = number.parse().map_err(|_| too_large())?;
        total = value
            .checked_mul(seconds_per_unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_large)?;
        rest = chars.as_str();
    }
    if total == 0 {
        return Err(format!(
            "duration {s:?} is zero; it must be at least 1s; {DURATION_FORM}"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way [`parse_duration`] reads it (`5m`, `1h30m`, `7d`).
///
/// Durations with a fractional second fall back to the `Debug` form (`1.5s`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{d:?}");
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Checks that `expr` is a valid 5-field cron expression.
fn validate_cron(expr: &str) -> Result<(), String> {
    const FORM: &str =
        "expected 5 fields: minute hour day-of-month month day-of-week, like \"*/5 * * * *\"";
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        let plural = if fields == 1 { "" } else { "s" };
        return Err(format!(
            "cron expression {expr:?} has {fields} field{plural}; {FORM}"
        ));
    }
    croner::Cron::new(expr)
        .parse()
        .map(|_| ())
        .map_err(|e| format!("invalid cron expression {expr:?}: {e} ({FORM})"))
}

/// An error loading or validating the configuration. Its `Display` is one line.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError {
    repr: Repr,
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    /// The file could not be read. The I/O error is part of the message, so it is not also
    /// reported as `source()` (error reporters would print it twice).
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("config error in {origin}{}: {message}", position(.line, .column))]
    Invalid {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn position(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    fn read(path: &Path, error: std::io::Error) -> Self {
        ConfigError {
            repr: Repr::Read {
                path: path.display().to_string(),
                error,
            },
        }
    }

    fn invalid(origin: &str, pos: Option<(usize, usize)>, message: String) -> Self {
        ConfigError {
            repr: Repr::Invalid {
                origin: origin.to_string(),
                line: pos.map(|p| p.0),
                column: pos.map(|p| p.1),
                message,
            },
        }
    }

    /// The 1-based line of the problem, when it has one.
    pub fn line(&self) -> Option<usize> {
        match &self.repr {
            Repr::Invalid { line, .. } => *line,
            Repr::Read { .. } => None,
        }
    }

    /// The 1-based column (in characters) of the problem, when it has one.
    pub fn column(&self) -> Option<usize> {
        match &self.repr {
            Repr::Invalid { column, .. } => *column,
            Repr::Read { .. } => None,
        }
    }

    /// The file (or [`EMBEDDED_ORIGIN`]) the error is about.
    pub fn origin(&self) -> &str {
        match &self.repr {
            Repr::Invalid { origin, .. } => origin,
            Repr::Read { path, .. } => path,
        }
    }

    /// What is wrong, without the file and position prefix.
    pub fn message(&self) -> String {
        match &self.repr {
            Repr::Invalid { message, .. } => message.clone(),
            Repr::Read { error, .. } => error.to_string(),
        }
    }

    /// The I/O error, when the file could not be read.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match &self.repr {
            Repr::Read { error, .. } => Some(error),
            Repr::Invalid { .. } => None,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Raw, span-carrying form of the file, as deserialized by toml.

type Str = Spanned<String>;

/// (offset, resolved socket path, store name, key) of one socket, for the duplicate check.
type Socket = (usize, PathBuf, String, &'static str);

const NO_STORES: &str =
    "no stores defined: add a [stores.NAME] table with synchronizer and collector socket paths";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state: Option<Str>,
    max_sessions: Option<Spanned<i64>>,
    stores: Option<Spanned<BTreeMap<Str, Spanned<RawStore>>>>,
    partnerships: Option<Vec<Spanned<RawPartnership>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    synchronizer: Option<Str>,
    collector: Option<Str>,
    path: Option<Str>,
    spawn: Option<Spanned<bool>>,
    retention: Option<Str>,
    max_body_bytes: Option<Spanned<i64>>,
    synchronizer_bin: Option<Str>,
    collector_bin: Option<Str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartnership {
    name: Option<Str>,
    source: Option<Str>,
    destination: Option<Str>,
    direction: Option<Str>,
    every: Option<Str>,
    cron: Option<Str>,
    conflicts: Option<Str>,
    batch: Option<Spanned<i64>>,
    folders: Option<Spanned<Vec<Str>>>,
    bodies: Option<bool>,
}

/// Validation problems, each at a byte offset; the one earliest in the file is reported.
struct Problems<'t> {
    text: &'t str,
    list: Vec<(usize, String)>,
}

impl Problems<'_> {
    fn add(&mut self, offset: usize, message: String) {
        self.list.push((offset, message));
    }

    /// The 1-based line of byte `offset`, for messages that refer to another place.
    fn line_of(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    fn into_error(self, origin: &str) -> Option<ConfigError> {
        let text = self.text;
        self.list
            .into_iter()
            .min_by_key(|(offset, _)| *offset)
            .map(|(offset, message)| {
                ConfigError::invalid(origin, Some(line_col(text, offset)), message)
            })
    }
}

/// Resolves `p` against `base` unless it is absolute; drops `.` components.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    joined.components().collect()
}

/// Rewrites toml's message for an error at `span_start` into the config file's vocabulary,
/// adding a hint where one is known.
fn toml_message(message: &str, text: &str, span_start: Option<usize>) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // serde: "unknown field `x`, expected one of `a`, `b`" / "... expected `a` or `b`".
        return match rest.split_once(", expected ") {
            Some((key, accepted)) => {
                let accepted = accepted.strip_prefix("one of ").unwrap_or(accepted);
                format!("unknown key {key}; remove or rename it (accepted keys: {accepted})")
            }
            None => format!("unknown key {rest}; remove it"),
        };
    }
    let message = message.replace(" as i128, expected i64", " is out of range");
    let at = span_start.and_then(|start| text.get(start..)).unwrap_or("");
    if message.contains("expected a sequence") && at.starts_with("[partnerships") {
        return format!(
            "{message}; write [[partnerships]] (double brackets) before each partnership"
        );
    }
    message
}

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// `origin` is `path` as given; relative paths in the file are resolved against the file's
    /// directory, made absolute with the current directory if `path` is relative.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, e))?;
        let parent = path.parent().unwrap_or(Path::new(""));
        let base_dir = if parent.is_absolute() {
            parent.to_path_buf()
        } else {
            let cwd = std::env::current_dir().map_err(|e| ConfigError::read(path, e))?;
            resolve(&cwd, &parent.to_string_lossy())
        };
        Config::parse(&text, &path.display().to_string(), &base_dir)
    }

    /// Parses and validates config `text`; `origin` names it in errors and relative paths are
    /// resolved against `base_dir`.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let pos = e.span().map(|span| line_col(text, span.start));
            ConfigError::invalid(
                origin,
                pos,
                toml_message(e.message(), text, e.span().map(|s| s.start)),
            )
        })?;
        let mut problems = Problems {
            text,
            list: Vec::new(),
        };
        let config = build(raw, origin, base_dir, &mut problems);
        match problems.into_error(origin) {
            Some(err) => Err(err),
            None => Ok(config),
        }
    }

    /// The partnership called `name`; an unknown name is an error listing the known ones.
    pub fn partnership(&self, name: &str) -> Result<&Partnership, ConfigError> {
        self.partnerships
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                let known = if self.partnerships.is_empty() {
                    "no partnerships are defined".to_string()
                } else {
                    let names: Vec<&str> =
                        self.partnerships.iter().map(|p| p.name.as_str()).collect();
                    format!("known partnerships: {}", names.join(", "))
                };
                ConfigError::invalid(
                    &self.origin,
                    None,
                    format!("no partnership named {name:?} ({known})"),
                )
            })
    }

    /// The store called `name`.
    pub fn store(&self, name: &str) -> Option<&StoreConfig> {
        self.stores.get(name)
    }
}

/// Checks a required path value and resolves it; records a problem if it is empty.
fn path_value(
    base_dir: &Path,
    value: &Str,
    what: impl FnOnce() -> String,
    problems: &mut Problems,
) -> PathBuf {
    if value.get_ref().trim().is_empty() {
        problems.add(value.span().start, format!("{} is empty", what()));
    }
    resolve(base_dir, value.get_ref())
}

/// Turns the raw file into a [`Config`], recording every problem found.
fn build(raw: RawConfig, origin: &str, base_dir: &Path, problems: &mut Problems<'_>) -> Config {
    let state = match &raw.state {
        Some(state) => path_value(
            base_dir,
            state,
            || "state (the agent's sync-state database file)".to_string(),
            problems,
        ),
        None => {
            problems.add(
                0,
                "missing key `state`: add a line like state = \"state/agent.db\" (the agent's \
                 sync-state database) at the top of the file"
                    .to_string(),
            );
            PathBuf::new()
        }
    };

    let max_sessions = match raw.max_sessions {
        None => DEFAULT_MAX_SESSIONS,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(v) if v >= 1 => v,
            _ => {
                problems.add(
                    n.span().start,
                    format!(
                        "max_sessions = {} is out of range; it must be at least 1 (default \
                         {DEFAULT_MAX_SESSIONS})",
                        n.get_ref()
                    ),
                );
                DEFAULT_MAX_SESSIONS
            }
        },
    };

    let mut stores = BTreeMap::new();
    let mut sockets: Vec<Socket> = Vec::new();
    let mut paths: Vec<(usize, PathBuf, String)> = Vec::new();
    match raw.stores {
        None => problems.add(0, NO_STORES.to_string()),
        Some(table) if table.get_ref().is_empty() => {
            problems.add(table.span().start, NO_STORES.to_string())
        }
        Some(table) => {
            for (name, store) in table.into_inner() {
                let (store, sock, at) = build_store(name, store, base_dir, problems);
                sockets.extend(sock);
                if let (Some(at), Some(path)) = (at, &store.path) {
                    paths.push((at, path.clone(), store.name.clone()));
                }
                stores.insert(store.name.clone(), store);
            }
        }
    }
    // Two stores naming one file would be one store synced with itself, served by two pairs of
    // daemons.
    paths.sort_by_key(|p| p.0);
    for (i, (offset, path, store)) in paths.iter().enumerate() {
        if let Some((first_offset, _, first)) = paths[..i].iter().find(|p| same_file(&p.1, path)) {
            let first_line = problems.line_of(*first_offset);
            problems.add(
                *offset,
                format!(
                    "store {store:?}: path {} is already the path of store {first:?} (line \
                     {first_line}); each store needs its own file",
                    path.display()
                ),
            );
        }
    }

    sockets.sort_by_key(|s| s.0);
    let mut seen: HashMap<&Path, (usize, &str, &str)> = HashMap::new();
    for (offset, path, store, key) in &sockets {
        if let Some((first_offset, first_store, first_key)) = seen.get(path.as_path()) {
            let first_line = problems.line_of(*first_offset);
            problems.add(
                *offset,
                format!(
                    "store {store:?}: {key} socket {} is already the {first_key} socket of store \
                     {first_store:?} (line {first_line}); every synchronizer and collector needs \
                     its own socket path",
                    path.display()
                ),
            );
        } else {
            seen.insert(path, (*offset, store, key));
        }
    }
    if let Some(raw_state) = &raw.state {
        for store in stores.values() {
            if store.path.as_deref() == Some(state.as_path()) {
                problems.add(
                    raw_state.span().start,
                    format!(
                        "state {} is also the path of store {:?}; the agent's state file must be \
                         a separate file",
                        state.display(),
                        store.name
                    ),
                );
            }
        }
    }

    let mut partnerships = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, p) in raw.partnerships.unwrap_or_default().into_iter().enumerate() {
        partnerships.push(build_partnership(index, p, &stores, &mut names, problems));
    }

    Config {
        origin: origin.to_string(),
        base_dir: base_dir.to_path_buf(),
        state,
        max_sessions,
        stores,
        partnerships,
    }
}

fn build_store(
    name: Str,
    store: Spanned<RawStore>,
    base_dir: &Path,
    problems: &mut Problems,
) -> (StoreConfig, Vec<Socket>, Option<usize>) {
    let name_offset = name.span().start;
    let table_offset = store.span().start;
    let name = name.into_inner();
    let raw = store.into_inner();
    if name.trim().is_empty() {
        problems.add(name_offset, "a store name is empty".to_string());
    }
    let ctx = format!("store {name:?}");
    let mut sockets = Vec::new();

    let mut socket = |key: &'static str, value: &Option<Str>, problems: &mut Problems| match value {
        Some(v) => {
            let path = path_value(base_dir, v, || format!("{ctx}: {key}"), problems);
            if let Err(e) = shared::ipc::check_socket_path(&path) {
                problems.add(v.span().start, format!("{ctx}: {key}: {e}"));
            }
            sockets.push((v.span().start, path.clone(), name.clone(), key));
            path
        }
        None => {
            let example = match key {
                "synchronizer" => "sync",
                _ => "coll",
            };
            problems.add(
                table_offset,
                format!(
                    "{ctx}: missing key `{key}`: add {key} = \"run/{name}.{example}.sock\" (the \
                     socket path of this store's {key})"
                ),
            );
            PathBuf::new()
        }
    };
    let synchronizer = socket("synchronizer", &raw.synchronizer, problems);
    let collector = socket("collector", &raw.collector, problems);

    let optional_path = |key: &str, value: &Option<Str>, problems: &mut Problems| {
        value
            .as_ref()
            .map(|v| path_value(base_dir, v, || format!("{ctx}: {key}"), problems))
    };
    let path = optional_path("path", &raw.path, problems);
    let path_at = raw.path.as_ref().map(|p| p.span().start);
    let synchronizer_bin = optional_path("synchronizer_bin", &raw.synchronizer_bin, problems);
    let collector_bin = optional_path("collector_bin", &raw.collector_bin, problems);

    let spawn = match &raw.spawn {
        Some(s) if *s.get_ref() && path.is_none() => {
            problems.add(
                s.span().start,
                format!(
                    "{ctx}: spawn = true requires path: add path = \"data/{name}.db\" (the store \
                     file the spawned synchronizer and collector serve), or remove spawn"
                ),
            );
            true
        }
        Some(s) => *s.get_ref(),
        None => false,
    };

    let retention = raw.retention.as_ref().and_then(|r| {
        parse_duration(r.get_ref())
            .map_err(|e| problems.add(r.span().start, format!("{ctx}: retention: {e}")))
            .ok()
    });
    let max_body_bytes = raw.max_body_bytes.as_ref().and_then(|m| {
        u64::try_from(*m.get_ref())
            .ok()
            .filter(|&n| n > 0)
            .or_else(|| {
                problems.add(
                    m.span().start,
                    format!(
                        "{ctx}: max_body_bytes must be a positive number of bytes, e.g. 10485760 for 10 MiB"
                    ),
                );
                None
            })
    });

    let store = StoreConfig {
        name,
        synchronizer,
        collector,
        path,
        spawn,
        retention,
        max_body_bytes,
        synchronizer_bin,
        collector_bin,
    };
    (store, sockets, path_at)
}

/// Whether two store paths name one file: the same path, or (when both exist) one file
/// reached two ways, e.g. through a symlink.
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

fn build_partnership(
    index: usize,
    p: Spanned<RawPartnership>,
    stores: &BTreeMap<String, StoreConfig>,
    names: &mut HashMap<String, usize>,
    problems: &mut Problems,
) -> Partnership {
    let table_offset = p.span().start;
    let raw = p.into_inner();

    let (name, ctx) = match &raw.name {
        Some(n) => {
            let name = n.get_ref().clone();
            if name.trim().is_empty() {
                problems.add(
                    n.span().start,
                    format!("partnership #{}: name is empty", index + 1),
                );
            } else if let Some(first) = names.get(&name) {
                let first_line = problems.line_of(*first);
                problems.add(
                    n.span().start,
                    format!(
                        "duplicate partnership name {name:?} (first used at line {first_line}); \
                         partnership names must be unique"
                    ),
                );
            } else {
                names.insert(name.clone(), n.span().start);
            }
            let ctx = format!("partnership {name:?}");
            (name, ctx)
        }
        None => {
            let ctx = format!("partnership #{}", index + 1);
            problems.add(
                table_offset,
                format!(
                    "{ctx}: missing key `name`: add name = \"SOURCE-DESTINATION\" (the name \
                     `agent sync NAME` takes)"
                ),
            );
            (String::new(), ctx)
        }
    };

    let known = || {
        stores
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let store_ref = |key: &str, value: &Option<Str>, problems: &mut Problems| match value {
        Some(v) => {
            let s = v.get_ref();
            if !stores.contains_key(s) {
                problems.add(
                    v.span().start,
                    format!(
                        "{ctx}: unknown store {s:?} in {key} (known stores: {})",
                        known()
                    ),
                );
            }
            s.clone()
        }
        None => {
            problems.add(
                table_offset,
                format!(
                    "{ctx}: missing key `{key}`: add {key} = \"NAME\" naming one of the stores ({})",
                    known()
                ),
            );
            String::new()
        }
    };
    let source = store_ref("source", &raw.source, problems);
    let destination = store_ref("destination", &raw.destination, problems);
    if let (Some(_), Some(d)) = (&raw.source, &raw.destination) {
        if source == destination {
            problems.add(
                d.span().start,
                format!(
                    "{ctx}: source and destination are both {source:?}; a partnership from a \
                     store to itself has nothing to synchronize, name two different stores"
                ),
            );
        }
    }

    let direction = match &raw.direction {
        None => Direction::default(),
        Some(d) => d.get_ref().parse().unwrap_or_else(|e| {
            problems.add(d.span().start, format!("{ctx}: {e}"));
            Direction::default()
        }),
    };

    let conflicts = match &raw.conflicts {
        None => ConflictPolicy::default(),
        Some(c) => c.get_ref().parse().unwrap_or_else(|e| {
            problems.add(c.span().start, format!("{ctx}: {e}"));
            ConflictPolicy::default()
        }),
    };

    let schedule = match (&raw.every, &raw.cron) {
        (Some(every), Some(cron)) => {
            let later = if cron.span().start > every.span().start {
                cron.span().start
            } else {
                every.span().start
            };
            problems.add(
                later,
                format!("{ctx}: both every and cron are set; keep exactly one of them"),
            );
            Schedule::Every(Duration::ZERO)
        }
        (None, None) => {
            problems.add(
                table_offset,
                format!(
                    "{ctx}: no schedule: add every = \"5m\" or cron = \"*/5 * * * *\" (exactly \
                     one of the two)"
                ),
            );
            Schedule::Every(Duration::ZERO)
        }
        (Some(every), None) => match parse_duration(every.get_ref()) {
            Ok(d) => Schedule::Every(d),
            Err(e) => {
                problems.add(every.span().start, format!("{ctx}: every: {e}"));
                Schedule::Every(Duration::ZERO)
            }
        },
        (None, Some(cron)) => {
            if let Err(e) = validate_cron(cron.get_ref()) {
                problems.add(cron.span().start, format!("{ctx}: cron: {e}"));
            }
            Schedule::Cron(cron.get_ref().clone())
        }
    };

    let batch = match &raw.batch {
        None => DEFAULT_BATCH,
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(v) if (1..=MAX_BATCH).contains(&v) => v,
            _ => {
                problems.add(
                    b.span().start,
                    format!(
                        "{ctx}: batch = {} is out of range; it must be 1..={MAX_BATCH} changes \
                         per batch (default {DEFAULT_BATCH})",
                        b.get_ref()
                    ),
                );
                DEFAULT_BATCH
            }
        },
    };

    let folders = raw.folders.map(|list| {
        if list.get_ref().is_empty() {
            problems.add(
                list.span().start,
                format!(
                    "{ctx}: folders = [] would synchronize nothing; list folder patterns, or \
                     remove folders to synchronize every folder"
                ),
            );
        }
        list.into_inner()
            .into_iter()
            .map(|f| {
                if let Err(e) = shared::scope::FolderPattern::parse(f.get_ref()) {
                    problems.add(f.span().start, format!("{ctx}: folders: {e}"));
                }
                f.into_inner()
            })
            .collect()
    });

    Partnership {
        name,
        source,
        destination,
        direction,
        schedule,
        conflicts,
        batch,
        folders,
        bodies: raw.bodies.unwrap_or(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "conf/agent.toml";

    /// The example from the product contract, verbatim.
    const EXAMPLE: &str = r#"state = "state/agent.db"                 # the agent's own SQLite file of sync-state records (required)

[stores.laptop]
synchronizer = "run/laptop.sync.sock"    # required: socket path of this store's synchronizer
collector    = "run/laptop.coll.sock"    # required: socket path of this store's collector
path  = "data/laptop.db"                 # optional: the store file; with spawn, the agent starts both processes
spawn = true                             # optional, default false; spawn = true requires path

[stores.server]
synchronizer = "run/server.sync.sock"
collector    = "run/server.coll.sock"

[[partnerships]]
name      = "laptop-server"
source    = "laptop"
destination = "server"
direction = "both"        # both | one-way   (default both)
every     = "5m"          # or: cron = "*/5 * * * *"  (exactly one of the two is required)
conflicts = "defer"       # source-wins | destination-wins | newer-wins | merge | defer  (default defer)
batch     = 1000          # changes per batch (default 1000; must be 1..=100000)
"#;

    /// Two valid stores on lines 1-8; partnership tables can be appended from line 9 on.
    const STORES: &str = r#"state = "agent.db"
[stores.laptop]
synchronizer = "run/laptop.sync.sock"
collector = "run/laptop.coll.sock"
[stores.server]
synchronizer = "run/server.sync.sock"
collector = "run/server.coll.sock"

"#;

    fn base() -> PathBuf {
        PathBuf::from("/srv/icsync")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, ORIGIN, &base())
    }

    /// Parses `text`, expects an error at `line` whose Display contains every phrase.
    #[track_caller]
    fn expect_error(text: &str, line: usize, phrases: &[&str]) -> ConfigError {
        let err = match parse(text) {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert!(!shown.contains('\n'), "not one line: {shown}");
        assert!(
            shown.starts_with(&format!("config error in {ORIGIN}:{line}:")),
            "wrong position (want line {line}): {shown}"
        );
        assert_eq!(err.line(), Some(line), "{shown}");
        for phrase in phrases {
            assert!(shown.contains(phrase), "missing {phrase:?} in: {shown}");
        }
        err
    }

    fn with_partnership(body: &str) -> String {
        format!("{STORES}[[partnerships]]\n{body}")
    }

    #[test]
    fn example_parses_into_expected_values() {
        let config = parse(EXAMPLE).expect("example parses");
        let b = base();
        assert_eq!(config.origin, ORIGIN);
        assert_eq!(config.base_dir, b);
        assert_eq!(config.state, b.join("state/agent.db"));
        assert_eq!(config.max_sessions, 4);
        assert_eq!(
            config.stores.keys().collect::<Vec<_>>(),
            vec!["laptop", "server"]
        );
        assert_eq!(
            config.store("laptop"),
            Some(&StoreConfig {
                name: "laptop".into(),
                synchronizer: b.join("run/laptop.sync.sock"),
                collector: b.join("run/laptop.coll.sock"),
                path: Some(b.join("data/laptop.db")),
                spawn: true,
                retention: None,
                max_body_bytes: None,
                synchronizer_bin: None,
                collector_bin: None,
            })
        );
        assert_eq!(
            config.store("server"),
            Some(&StoreConfig {
                name: "server".into(),
                synchronizer: b.join("run/server.sync.sock"),
                collector: b.join("run/server.coll.sock"),
                path: None,
                spawn: false,
                retention: None,
                max_body_bytes: None,
                synchronizer_bin: None,
                collector_bin: None,
            })
        );
        assert!(config.store("nope").is_none());
        assert_eq!(
            config.partnerships,
            vec![Partnership {
                name: "laptop-server".into(),
                source: "laptop".into(),
                destination: "server".into(),
                direction: Direction::Both,
                schedule: Schedule::Every(Duration::from_secs(300)),
                conflicts: ConflictPolicy::Defer,
                batch: 1000,
                folders: None,
                bodies: true,
            }]
        );
        let p = config.partnership("laptop-server").expect("known");
        assert_eq!(p.schedule.to_string(), "every 5m");
    }

    #[test]
    fn optional_keys_and_absolute_paths() {
        let text = r#"state = "/var/lib/icsync/agent.db"
max_sessions = 2
[stores.a]
synchronizer = "/run/a.sync.sock"
collector = "./run/a.coll.sock"
path = "a.db"
spawn = true
synchronizer_bin = "bin/synchronizer"
collector_bin = "/usr/bin/collector"
[stores.b]
synchronizer = "b.sync.sock"
collector = "b.coll.sock"
spawn = false
[[partnerships]]
name = "a-b"
source = "a"
destination = "b"
direction = "one-way"
cron = "*/5 * * * *"
conflicts = "newer-wins"
batch = 100000
[[partnerships]]
name = "b-a"
source = "b"
destination = "a"
every = "1h30m"
batch = 1
"#;
        let config = parse(text).expect("parses");
        let b = base();
        assert_eq!(config.state, PathBuf::from("/var/lib/icsync/agent.db"));
        assert_eq!(config.max_sessions, 2);
        let a = config.store("a").expect("store a");
        assert_eq!(a.synchronizer, PathBuf::from("/run/a.sync.sock"));
        assert_eq!(a.collector, b.join("run/a.coll.sock"));
        assert_eq!(a.path, Some(b.join("a.db")));
        assert!(a.spawn);
        assert_eq!(a.synchronizer_bin, Some(b.join("bin/synchronizer")));
        assert_eq!(a.collector_bin, Some(PathBuf::from("/usr/bin/collector")));
        assert!(!config.store("b").expect("store b").spawn);

        let p = config.partnership("a-b").expect("a-b");
        assert_eq!(p.direction, Direction::OneWay);
        assert_eq!(p.schedule, Schedule::Cron("*/5 * * * *".into()));
        assert_eq!(p.schedule.to_string(), "cron */5 * * * *");
        assert_eq!(p.conflicts, ConflictPolicy::NewerWins);
        assert_eq!(p.batch, 100_000);
        let q = config.partnership("b-a").expect("b-a");
        assert_eq!(q.schedule, Schedule::Every(Duration::from_secs(5400)));
        assert_eq!(q.schedule.to_string(), "every 1h30m");
        assert_eq!(q.batch, 1);
    }

    #[test]
    fn bad_values_of_optional_keys_are_refused_with_their_line() {
        for (extra, line, phrase) in [
            (
                "folders = [\"Inbox\", \"Work//Projects\"]\n",
                9,
                "folder pattern \"Work//Projects\" has an empty folder name",
            ),
            ("bodies = true\nbodies2 = 1\n", 10, "unknown key"),
        ] {
            let text = with_partnership(&format!(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\n{extra}"
            ));
            let err = parse(&text).expect_err("refused");
            assert!(err.to_string().contains(phrase), "{err}");
            assert!(err.line().is_some_and(|l| l >= line - 4), "{err}");
        }
        let text = "state = \"agent.db\"\n[stores.laptop]\nsynchronizer = \"s\"\ncollector = \"c\"\nretention = \"30d\"\nmax_body_bytes = 0\n";
        let err = parse(text).expect_err("refused");
        assert!(
            err.to_string().contains(":6:") && err.to_string().contains("max_body_bytes"),
            "{err}"
        );
        let text = "state = \"agent.db\"\n[stores.laptop]\nsynchronizer = \"s\"\ncollector = \"c\"\nretention = \"30d\"\nmax_body_bytes = 1024\n";
        let store = parse(text).expect("parses").stores["laptop"].clone();
        assert_eq!(
            (store.retention, store.max_body_bytes),
            (Some(Duration::from_secs(30 * 86_400)), Some(1024))
        );
    }

    #[test]
    fn folders_and_bodies_scope_the_partnership() {
        let config = parse(&with_partnership(
            "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\nfolders = [\"Inbox\", \"Projects/**\"]\nbodies = false\n",
        ))
        .expect("parses");
        let p = config.partnership("p").expect("p");
        assert_eq!(
            p.folders,
            Some(vec!["Inbox".to_string(), "Projects/**".to_string()])
        );
        assert!(!p.bodies);
    }

    #[test]
    fn defaults_when_optional_keys_are_missing() {
        let config = parse(&with_partnership(
            "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"30s\"\n",
        ))
        .expect("parses");
        assert_eq!(config.max_sessions, DEFAULT_MAX_SESSIONS);
        let s = config.store("laptop").expect("laptop");
        assert_eq!(
            (
                s.path.as_ref(),
                s.spawn,
                s.retention,
                s.synchronizer_bin.as_ref()
            ),
            (None, false, None, None)
        );
        assert!(s.collector_bin.is_none());
        let p = config.partnership("p").expect("p");
        assert_eq!(p.direction, Direction::Both);
        assert_eq!(p.conflicts, ConflictPolicy::Defer);
        assert_eq!(p.batch, 1000);
        assert_eq!(p.folders, None);
        assert!(p.bodies);

        // No partnerships at all is a valid (if idle) config.
        let config = parse(STORES).expect("parses");
        assert!(config.partnerships.is_empty());
    }

    #[test]
    fn unknown_partnership_lists_known_names() {
        let config = parse(EXAMPLE).expect("parses");
        let err = config.partnership("laptop-sever").expect_err("unknown");
        let shown = err.to_string();
        assert_eq!(
            shown,
            "config error in conf/agent.toml: no partnership named \"laptop-sever\" \
             (known partnerships: laptop-server)"
        );
        assert_eq!(err.line(), None);
        let empty = parse(STORES).expect("parses");
        let err = empty.partnership("x").expect_err("unknown");
        assert!(err.to_string().contains("no partnerships are defined"));
    }

    #[test]
    fn unknown_store_in_destination() {
        let text = EXAMPLE.replace("destination = \"server\"", "destination = \"sever\"");
        let err = expect_error(
            &text,
            16,
            &["partnership \"laptop-server\": unknown store \"sever\" in destination (known stores: laptop, server)"],
        );
        assert_eq!(err.column(), Some(15));
        assert_eq!(
            err.to_string(),
            "config error in conf/agent.toml:16:15: partnership \"laptop-server\": unknown store \
             \"sever\" in destination (known stores: laptop, server)"
        );
    }

    #[test]
    fn unknown_store_in_source() {
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"lap\"\ndestination = \"server\"\nevery = \"5m\"\n",
            ),
            11,
            &[
                "unknown store \"lap\" in source",
                "known stores: laptop, server",
            ],
        );
    }

    #[test]
    fn partnership_from_a_store_to_itself() {
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"laptop\"\nevery = \"5m\"\n",
            ),
            12,
            &["partnership \"p\"", "a partnership from a store to itself"],
        );
    }

    #[test]
    fn duplicate_partnership_names() {
        let one = "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\n";
        let text = format!("{}[[partnerships]]\n{one}", with_partnership(one));
        expect_error(
            &text,
            15,
            &["duplicate partnership name \"p\"", "first used at line 10"],
        );
    }

    #[test]
    fn schedule_must_be_exactly_one_of_every_and_cron() {
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\ncron = \"* * * * *\"\n",
            ),
            14,
            &["both every and cron", "exactly one"],
        );
        expect_error(
            &with_partnership("name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\n"),
            9,
            &[
                "partnership \"p\": no schedule",
                "every = \"5m\"",
                "cron = ",
            ],
        );
    }

    #[test]
    fn bad_every_duration() {
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5 minutes\"\n",
            ),
            13,
            &["partnership \"p\": every:", "\"5 minutes\"", "\"1h30m\""],
        );
    }

    #[test]
    fn bad_cron_expressions() {
        for (expr, phrase) in [
            ("*/5 * * *", "has 4 fields"),
            ("0 */5 * * * *", "has 6 fields"),
            ("@daily", "has 1 field;"),
            ("61 * * * *", "invalid cron expression"),
            ("*/0 * * * *", "invalid cron expression"),
            ("a b c d e", "invalid cron expression"),
        ] {
            expect_error(
                &with_partnership(&format!(
                    "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\ncron = \"{expr}\"\n"
                )),
                13,
                &["partnership \"p\": cron:", phrase, "5 fields"],
            );
        }
    }

    #[test]
    fn cron_validation_table() {
        for ok in [
            "*/5 * * * *",
            "0 9 * * MON-FRI",
            "30 2 1 * *",
            "0 0 * * 0",
            "15,45 8-18 * * 1-5",
        ] {
            assert_eq!(validate_cron(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "@hourly",
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "x * * * *",
        ] {
            let err = validate_cron(bad).expect_err(bad);
            assert!(err.contains("5 fields"), "{bad}: {err}");
        }
    }

    #[test]
    fn batch_out_of_range() {
        for (value, phrase) in [
            ("0", "batch = 0 is out of range"),
            ("100001", "batch = 100001 is out of range"),
            ("-5", "batch = -5 is out of range"),
        ] {
            expect_error(
                &with_partnership(&format!(
                    "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\nbatch = {value}\n"
                )),
                14,
                &[phrase, "1..=100000"],
            );
        }
        expect_error(
            &with_partnership("name = \"p\"\nbatch = \"big\"\n"),
            11,
            &["invalid type"],
        );
    }

    #[test]
    fn spawn_requires_path() {
        let text = "state = \"agent.db\"\n[stores.laptop]\nsynchronizer = \"s\"\ncollector = \"c\"\nspawn = true\n";
        expect_error(
            text,
            5,
            &[
                "store \"laptop\": spawn = true requires path",
                "path = \"data/laptop.db\"",
            ],
        );
    }

    #[test]
    fn direction_and_conflicts_must_be_known_names() {
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\ndirection = \"sideways\"\n",
            ),
            14,
            &["unknown direction \"sideways\"", "both, one-way"],
        );
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\n\nconflicts = \"newest-wins\"\n",
            ),
            15,
            &[
                "unknown conflict policy \"newest-wins\"",
                "source-wins, destination-wins, newer-wins, merge, defer",
            ],
        );
    }

    #[test]
    fn bad_retention() {
        let text = "state = \"agent.db\"\n[stores.laptop]\nsynchronizer = \"s\"\ncollector = \"c\"\nretention = \"30 days\"\n";
        expect_error(
            text,
            5,
            &["store \"laptop\": retention:", "\"30 days\"", "\"7d\""],
        );
    }

    #[test]
    fn same_socket_twice_across_stores() {
        let text = "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"run/a.sock\"\ncollector = \"run/a.coll\"\n[stores.b]\nsynchronizer = \"run/b.sock\"\ncollector = \"./run/a.sock\"\n";
        expect_error(
            text,
            7,
            &[
                "store \"b\": collector socket /srv/icsync/run/a.sock",
                "synchronizer socket of store \"a\" (line 3)",
                "its own socket path",
            ],
        );
        // Within one store too.
        let text =
            "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"x.sock\"\ncollector = \"x.sock\"\n";
        expect_error(text, 4, &["already the synchronizer socket"]);
    }

    #[test]
    fn a_socket_path_the_system_cannot_take_is_refused() {
        let long = "d".repeat(100);
        let text = format!(
            "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"a.s\"\ncollector = \"{long}/a.c\"\n"
        );
        expect_error(
            &text,
            4,
            &[
                "store \"a\": collector: /srv/icsync/",
                "a socket path of 116 bytes is too long; the system takes at most 107",
            ],
        );
    }

    #[test]
    fn two_stores_must_not_be_one_file() {
        let text = "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"a.s\"\ncollector = \"a.c\"\npath = \"data/a.db\"\n[stores.b]\nsynchronizer = \"b.s\"\ncollector = \"b.c\"\npath = \"./data/a.db\"\n";
        expect_error(
            text,
            9,
            &[
                "store \"b\": path /srv/icsync/data/a.db is already the path of store \"a\" (line 5)",
                "each store needs its own file",
            ],
        );
        // One file reached two ways.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.db"), b"").expect("file");
        std::os::unix::fs::symlink(dir.path().join("a.db"), dir.path().join("link.db"))
            .expect("symlink");
        let text = "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"a.s\"\ncollector = \"a.c\"\npath = \"a.db\"\n[stores.b]\nsynchronizer = \"b.s\"\ncollector = \"b.c\"\npath = \"link.db\"\n";
        let err = Config::parse(text, ORIGIN, dir.path())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("is already the path of store \"a\""), "{err}");
    }

    #[test]
    fn state_must_not_be_a_store_file() {
        let text = "state = \"data/a.db\"\n[stores.a]\nsynchronizer = \"s\"\ncollector = \"c\"\npath = \"data/a.db\"\n";
        expect_error(text, 1, &["also the path of store \"a\""]);
    }

    #[test]
    fn at_least_one_store() {
        expect_error(
            "state = \"agent.db\"\n",
            1,
            &["no stores defined", "[stores.NAME]"],
        );
        expect_error(
            "state = \"agent.db\"\n\n[stores]\n",
            3,
            &["no stores defined"],
        );
    }

    #[test]
    fn missing_required_keys() {
        expect_error(
            "[stores.a]\nsynchronizer = \"s\"\ncollector = \"c\"\n",
            1,
            &["missing key `state`", "state = \"state/agent.db\""],
        );
        expect_error(
            "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"s\"\n",
            2,
            &[
                "store \"a\": missing key `collector`",
                "collector = \"run/a.coll.sock\"",
            ],
        );
        expect_error(
            &with_partnership("source = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\n"),
            9,
            &["partnership #1: missing key `name`"],
        );
        expect_error(
            &with_partnership("name = \"p\"\nsource = \"laptop\"\nevery = \"5m\"\n"),
            9,
            &[
                "partnership \"p\": missing key `destination`",
                "laptop, server",
            ],
        );
    }

    #[test]
    fn empty_values_are_refused() {
        expect_error(
            "state = \"\"\n[stores.a]\nsynchronizer = \"s\"\ncollector = \"c\"\n",
            1,
            &["state (the agent's sync-state database file) is empty"],
        );
        expect_error(
            &with_partnership(
                "name = \"p\"\nsource = \"laptop\"\ndestination = \"server\"\nevery = \"5m\"\nfolders = []\n",
            ),
            14,
            &["folders = [] would synchronize nothing"],
        );
        expect_error(
            "state = \"a.db\"\nmax_sessions = 0\n[stores.a]\nsynchronizer = \"s\"\ncollector = \"c\"\n",
            2,
            &["max_sessions = 0 is out of range", "at least 1"],
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = expect_error(
            "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"s\"\ncollector = \"c\"\nspwan = true\n",
            5,
            &[
                "unknown key `spwan`; remove or rename it (accepted keys: `synchronizer`, \
                 `collector`, `path`, `spawn`, `retention`, `max_body_bytes`, `synchronizer_bin`, `collector_bin`)",
            ],
        );
        assert_eq!(err.column(), Some(1));
        expect_error(
            "state = \"agent.db\"\n[store.a]\n",
            2,
            &["unknown key `store`", "`stores`"],
        );
        expect_error(
            &with_partnership("name = \"p\"\nschedule = \"5m\"\n"),
            11,
            &["unknown key `schedule`", "`every`", "`cron`"],
        );
    }

    #[test]
    fn syntax_and_type_errors_carry_the_line() {
        let err = expect_error(
            "state = \"agent.db\"\n\n[stores.a\nsynchronizer = \"s\"\n",
            3,
            &[],
        );
        assert!(err.column().is_some());
        expect_error(
            "state = \"agent.db\"\n[stores.a]\nsynchronizer = \"s\"\ncollector = \"c\"\nspawn = \"yes\"\n",
            5,
            &["invalid type", "boolean"],
        );
        expect_error("state = \"a\"\nstate = \"b\"\n", 2, &["duplicate key"]);
        expect_error(
            "state = \"a\"\n\n[partnerships]\nname = \"p\"\n",
            3,
            &["write [[partnerships]] (double brackets)"],
        );
    }

    #[test]
    fn errors_pick_the_first_problem_in_the_file() {
        // Store "z" comes after "a" alphabetically but the bad partnership line is reported
        // only after store problems that come earlier in the file.
        let text = "state = \"agent.db\"\n[stores.z]\nsynchronizer = \"s\"\ncollector = \"c\"\nretention = \"1y\"\n[stores.a]\nsynchronizer = \"s2\"\ncollector = \"c2\"\nspawn = true\n";
        expect_error(text, 5, &["store \"z\": retention"]);
    }

    #[test]
    fn positions_count_characters_and_handle_crlf() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("a\r\nbc", 4), (2, 2));
        assert_eq!(line_col("é = 1\nx", 3), (1, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
        let text = EXAMPLE
            .replace('\n', "\r\n")
            .replace("batch     = 1000", "batch     = 0");
        expect_error(&text, 20, &["batch = 0"]);
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, EXAMPLE).expect("write");
        let config = Config::load(&path).expect("loads");
        assert_eq!(config.origin, path.display().to_string());
        assert_eq!(config.base_dir, dir.path());
        assert_eq!(config.state, dir.path().join("state/agent.db"));
        assert_eq!(
            config.store("server").expect("server").collector,
            dir.path().join("run/server.coll.sock")
        );

        std::fs::write(&path, "state = \"x\"\nbogus = 1\n").expect("write");
        let err = Config::load(&path).expect_err("bad");
        assert!(
            err.to_string()
                .starts_with(&format!("config error in {}:2:1: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn load_relative_path_makes_base_dir_absolute() {
        // A directory under the current one, named by a relative path (no chdir: tests share
        // the process's current directory).
        let dir = tempfile::Builder::new()
            .prefix(".icsync-config-test-")
            .tempdir_in(".")
            .expect("tempdir");
        let name = dir.path().file_name().expect("temp dir name");
        let relative = Path::new(name).join("agent.toml");
        std::fs::write(&relative, EXAMPLE).expect("write");
        let config = Config::load(&relative).expect("loads");
        let cwd = std::env::current_dir().expect("cwd");
        let expected_base = cwd.join(name);
        assert!(config.base_dir.is_absolute());
        assert_eq!(config.base_dir, expected_base);
        assert_eq!(config.state, expected_base.join("state/agent.db"));
        assert_eq!(config.origin, relative.display().to_string());

        let err = Config::load(Path::new("does/not/exist/agent.toml")).expect_err("missing");
        assert!(err
            .to_string()
            .starts_with("cannot read config does/not/exist/agent.toml: "));
    }

    #[test]
    fn load_missing_file_is_a_read_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.toml");
        let err = Config::load(&path).expect_err("missing");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("cannot read config {}: ", path.display())),
            "{shown}"
        );
        let io = err.io_error().expect("io error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(shown.ends_with(&io.to_string()), "{shown}");
        assert!(!shown.contains('\n'));
        assert_eq!(err.line(), None);
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn parse_duration_table() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("2h", 7200),
            ("7d", 604_800),
            ("1h30m", 5400),
            ("1d2h3m4s", 93_784),
            ("90m", 5400),
            ("0h1m", 60),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in [
            "",
            "5",
            "5x",
            "0s",
            "0m0s",
            "m",
            "-5m",
            "5 m",
            " 5m",
            "5m ",
            "1.5h",
            "5M",
            "30m1h",
            "5m5m",
            "5ms",
            "h5",
            "99999999999999999999d",
            "18446744073709551615d",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            let mentions_form = err.contains("\"30s\", \"5m\", \"2h\", \"7d\" or \"1h30m\"");
            assert!(mentions_form || err.contains("too large"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn format_duration_round_trips() {
        for secs in [1u64, 59, 60, 300, 3600, 5400, 86_400, 93_784] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn enum_names_display_parse_and_serde() {
        for policy in ConflictPolicy::ALL {
            assert_eq!(policy.to_string().parse::<ConflictPolicy>(), Ok(policy));
        }
        for direction in Direction::ALL {
            assert_eq!(direction.to_string().parse::<Direction>(), Ok(direction));
        }
        assert_eq!(
            ConflictPolicy::DestinationWins.to_string(),
            "destination-wins"
        );
        assert_eq!(Direction::OneWay.to_string(), "one-way");
        let err = "newest".parse::<ConflictPolicy>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown conflict policy \"newest\" (expected one of: source-wins, destination-wins, \
             newer-wins, merge, defer)"
        );

        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Wire {
            conflicts: ConflictPolicy,
            direction: Direction,
        }
        let wire = Wire {
            conflicts: ConflictPolicy::NewerWins,
            direction: Direction::OneWay,
        };
        let text = toml::to_string(&wire).expect("serialize");
        assert!(text.contains("conflicts = \"newer-wins\""), "{text}");
        assert!(text.contains("direction = \"one-way\""), "{text}");
        assert_eq!(toml::from_str::<Wire>(&text).expect("deserialize"), wire);
    }
}
