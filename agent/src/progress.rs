//! What `agent sync` shows while a session runs: on a terminal an indicatif spinner per
//! direction, redrawn after every acknowledged batch; otherwise (a pipe, a log file) one plain
//! line per batch. The result of each direction is a plain line either way.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::protocol::{Completed, Progress as BatchProgress};

use crate::session::{Event, Leg};

/// The progress display of one `agent sync`.
pub struct Progress {
    name: String,
    tty: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(name: &str, tty: bool) -> Progress {
        Progress {
            name: name.to_string(),
            tty,
            bar: None,
        }
    }

    pub fn show(&mut self, event: Event<'_>) {
        match event {
            Event::Started { leg } => {
                if self.tty {
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(format!("{} {}", self.name, leg.name()));
                    bar.set_message("waiting for the first batch");
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.bar = Some(bar);
                } else {
                    eprintln!("{} {}: started", self.name, leg.name());
                }
            }
            Event::Progress { leg, progress } => match &self.bar {
                Some(bar) => bar.set_message(batch_line(progress)),
                None => eprintln!("{} {}: {}", self.name, leg.name(), batch_line(progress)),
            },
            Event::Completed { leg, completed } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                for line in completed_lines(&self.name, leg, completed) {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A failed session: the bar goes, the error line follows on a clean line.
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

/// `contents batch 3: 1500 sent, 1498 applied, 0 conflicts, 0 errors`
pub fn batch_line(progress: &BatchProgress) -> String {
    let s = &progress.stats;
    format!(
        "{} batch {}: {} sent, {} applied, {} conflicts, {} errors",
        progress.phase.name(),
        s.batches,
        s.sent,
        s.applied,
        s.conflicts,
        s.errors
    )
}

/// A direction's result, and a warning line per item that failed.
pub fn completed_lines(name: &str, leg: &Leg, completed: &Completed) -> Vec<String> {
    let s = &completed.stats;
    let mut lines = vec![format!(
        "{name} {}: completed: {} sent, {} applied, {} conflicts, {} errors{}",
        leg.name(),
        s.sent,
        s.applied,
        s.conflicts,
        s.errors,
        if completed.destination_regressed {
            " (the destination had lost changes; they were sent again)"
        } else {
            ""
        }
    )];
    for e in &completed.errors {
        lines.push(format!(
            "{name} {}: warning: item {}: {}",
            leg.name(),
            e.item,
            e.reason
        ));
    }
    lines
}
