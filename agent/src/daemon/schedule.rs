//! Timing, as pure functions: when a partnership's next scheduled session is due, how long to
//! wait before retrying a failed session or restarting a spawned process, and the jitter that
//! keeps many retrying agents from hammering a daemon in step.
//!
//! Cron expressions are evaluated in the machine's **local time** (as cron itself does), with
//! croner; `every` intervals are measured on the monotonic clock from the end of the previous
//! session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone};

use crate::config::Schedule;

/// Exponential backoff: `base`, doubling with every attempt, at most `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// Retrying a failed session: 1 s, 2 s, 4 s ... at most 5 minutes.
    pub const SESSION_RETRY: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
    };
    /// Restarting a spawned process that exited: 200 ms, 400 ms ... at most 30 s.
    pub const RESTART: Backoff = Backoff {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(30),
    };

    /// The wait before attempt number `attempt` (1 is the first retry): `base * 2^(attempt-1)`,
    /// at most `cap`. Attempt 0 waits for nothing.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        2u32.checked_pow(attempt - 1)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// [`Backoff::delay`] spread over 75%..125% by `jitter` (in `0.0..1.0`), never above `cap`,
    /// rounded to whole milliseconds.
    pub fn jittered(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
        let d = self.delay(attempt).mul_f64(factor).min(self.cap);
        Duration::from_millis(d.as_millis() as u64)
    }
}

/// How long a spawned process must have run for its restart backoff to start over.
pub const RESTART_RESET_AFTER: Duration = Duration::from_secs(60);

/// The restart attempt after a process that had reached `attempt` exited having run for `ran`:
/// a process that ran for a minute or more starts over at 1.
pub fn restart_attempt(attempt: u32, ran: Duration) -> u32 {
    if ran >= RESTART_RESET_AFTER {
        1
    } else {
        attempt.saturating_add(1)
    }
}

/// How a session ended, as far as scheduling cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Another session of the partnership held its lock (e.g. `agent sync` in a shell).
    Busy,
    Failed {
        retryable: bool,
    },
}

/// What to do after a session: the attempt count to keep and, for a retryable failure, the wait
/// before the retry (`None`: just wait for the next scheduled run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPlan {
    pub attempt: u32,
    pub retry_in: Option<Duration>,
}

/// The pure core of the retry policy. A success resets the attempt count; a busy partnership is
/// skipped until its next scheduled run, keeping the count; a retryable failure is retried after
/// an exponential backoff with jitter; any other failure resets the count and waits for the next
/// scheduled run.
pub fn plan_retry(outcome: Outcome, attempt: u32, jitter: f64) -> RetryPlan {
    match outcome {
        Outcome::Completed | Outcome::Failed { retryable: false } => RetryPlan {
            attempt: 0,
            retry_in: None,
        },
        Outcome::Busy => RetryPlan {
            attempt,
            retry_in: None,
        },
        Outcome::Failed { retryable: true } => {
            let attempt = attempt.saturating_add(1);
            RetryPlan {
                attempt,
                retry_in: Some(Backoff::SESSION_RETRY.jittered(attempt, jitter)),
            }
        }
    }
}

/// A tiny xorshift64* generator for jitter, seeded from the clock and the process id (no crate
/// needed; nothing here has to be unpredictable, only different between agents and attempts).
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn from_clock() -> Jitter {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn seeded(seed: u64) -> Jitter {
        // Zero is xorshift's one fixed point.
        Jitter(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next value, uniform in `0.0..1.0`.
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A partnership's schedule, ready to compute run times.
#[derive(Clone, Debug)]
pub enum Timer {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl Timer {
    pub fn new(schedule: &Schedule) -> Result<Timer, croner::errors::CronError> {
        Ok(match schedule {
            Schedule::Every(d) => Timer::Every(*d),
            Schedule::Cron(expr) => Timer::Cron(Box::new(croner::Cron::new(expr).parse()?)),
        })
    }

    /// The first cron occurrence strictly after `after` (whole seconds); `None` for `every`
    /// or when the expression has no further occurrence.
    pub fn next_occurrence<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Timer::Every(_) => None,
            Timer::Cron(cron) => cron.find_next_occurrence(after, false).ok(),
        }
    }
}

/// The wait from `now` until `then` (zero if `then` has passed).
pub fn until<Tz: TimeZone>(now: &DateTime<Tz>, then: &DateTime<Tz>) -> Duration {
    then.clone()
        .signed_duration_since(now.clone())
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// A wait for people: `850ms`, `1.2s`, `40s`, `5m`, `1h30m`.
pub fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        crate::config::format_duration(Duration::from_secs(d.as_secs_f64().round() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test date")
            .with_timezone(&Utc)
    }

    #[test]
    fn backoff_grows_doubling_from_base_and_caps() {
        let b = Backoff::SESSION_RETRY;
        let secs: Vec<u64> = (0..=12).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // No overflow however many attempts.
        assert_eq!(b.delay(33), b.cap);
        assert_eq!(b.delay(u32::MAX), b.cap);

        let r = Backoff::RESTART;
        let ms: Vec<u128> = (1..=10).map(|a| r.delay(a).as_millis()).collect();
        assert_eq!(
            ms,
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000]
        );
    }

    #[test]
    fn jitter_spreads_around_the_delay_but_never_past_the_cap() {
        let b = Backoff::SESSION_RETRY;
        assert_eq!(b.jittered(3, 0.0), Duration::from_secs(3));
        assert_eq!(b.jittered(3, 0.5), Duration::from_secs(4));
        assert_eq!(b.jittered(3, 1.0), Duration::from_secs(5));
        assert_eq!(b.jittered(20, 1.0), b.cap);
        assert_eq!(b.jittered(20, 0.0), Duration::from_secs(225));
        // Out-of-range jitter is clamped.
        assert_eq!(b.jittered(1, -3.0), Duration::from_millis(750));
        assert_eq!(b.jittered(1, 7.0), Duration::from_millis(1250));

        let mut j = Jitter::seeded(42);
        let values: Vec<f64> = (0..1000).map(|_| j.next_f64()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
        let mut zero = Jitter::seeded(0);
        assert_ne!(zero.next_f64(), zero.next_f64());
        assert_ne!(Jitter::from_clock().next_f64(), -1.0);
    }

    #[test]
    fn retries_grow_cap_and_reset() {
        let mut attempt = 0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let plan = plan_retry(Outcome::Failed { retryable: true }, attempt, 0.5);
            attempt = plan.attempt;
            waits.push(plan.retry_in.expect("retryable").as_secs());
        }
        assert_eq!(attempt, 12);
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);

        // A success resets the count: the next failure waits the base again.
        let plan = plan_retry(Outcome::Completed, attempt, 0.5);
        assert_eq!(
            plan,
            RetryPlan {
                attempt: 0,
                retry_in: None
            }
        );
        let plan = plan_retry(Outcome::Failed { retryable: true }, plan.attempt, 0.5);
        assert_eq!(plan.attempt, 1);
        assert_eq!(plan.retry_in, Some(Duration::from_secs(1)));

        // Busy skips to the next scheduled run and keeps the count.
        assert_eq!(
            plan_retry(Outcome::Busy, 4, 0.5),
            RetryPlan {
                attempt: 4,
                retry_in: None
            }
        );
        // A failure retrying cannot fix waits for the schedule and ends the retry chain.
        assert_eq!(
            plan_retry(Outcome::Failed { retryable: false }, 4, 0.5),
            RetryPlan {
                attempt: 0,
                retry_in: None
            }
        );
    }

    #[test]
    fn restart_backoff_resets_after_a_minute_of_running() {
        assert_eq!(restart_attempt(0, Duration::from_millis(10)), 1);
        assert_eq!(restart_attempt(5, Duration::from_secs(59)), 6);
        assert_eq!(restart_attempt(5, Duration::from_secs(60)), 1);
        assert_eq!(restart_attempt(u32::MAX, Duration::ZERO), u32::MAX);
        let r = Backoff::RESTART;
        assert_eq!(
            r.delay(restart_attempt(9, Duration::from_secs(3600))),
            r.base
        );
    }

    #[test]
    fn cron_next_occurrence_is_strictly_later() {
        let t = Timer::new(&Schedule::Cron("*/5 * * * *".into())).expect("parses");
        assert_eq!(
            t.next_occurrence(&at("2025-03-10T10:02:30Z")),
            Some(at("2025-03-10T10:05:00Z"))
        );
        // Exactly on an occurrence: the next one, so a session never runs twice for one time.
        assert_eq!(
            t.next_occurrence(&at("2025-03-10T10:05:00Z")),
            Some(at("2025-03-10T10:10:00Z"))
        );
        assert_eq!(
            t.next_occurrence(&at("2025-03-10T23:59:59Z")),
            Some(at("2025-03-11T00:00:00Z"))
        );
        let weekdays = Timer::new(&Schedule::Cron("0 9 * * MON-FRI".into())).expect("parses");
        // 2025-03-14 is a Friday.
        assert_eq!(
            weekdays.next_occurrence(&at("2025-03-14T09:00:00Z")),
            Some(at("2025-03-17T09:00:00Z"))
        );
        let every = Timer::new(&Schedule::Every(Duration::from_secs(10))).expect("every");
        assert_eq!(every.next_occurrence(&at("2025-03-14T09:00:00Z")), None);
        assert!(Timer::new(&Schedule::Cron("61 * * * *".into())).is_err());
    }

    #[test]
    fn cron_works_in_local_time() {
        let t = Timer::new(&Schedule::Cron("* * * * *".into())).expect("parses");
        let now = chrono::Local::now();
        let next = t.next_occurrence(&now).expect("next minute");
        let wait = until(&now, &next);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(until(&next, &now), Duration::ZERO);
    }

    #[test]
    fn waits_are_shown_for_people() {
        assert_eq!(show(Duration::from_millis(850)), "850ms");
        assert_eq!(show(Duration::from_millis(1234)), "1.2s");
        assert_eq!(show(Duration::from_millis(40_400)), "40s");
        assert_eq!(show(Duration::from_secs(300)), "5m");
        assert_eq!(show(Duration::from_secs(5400)), "1h30m");
    }
}
