//! The progress bar: loss, accuracy, samples/s and time left, on stderr.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Progress over all the steps of a run. Hidden when stderr is not a terminal; the
/// per-epoch lines are log events either way.
pub(crate) struct Progress {
    bar: ProgressBar,
    last_draw: Instant,
    unit: &'static str,
}

impl Progress {
    pub(crate) fn new(total_steps: u64, quiet: bool, unit: &'static str) -> Progress {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total_steps), target);
        let style = ProgressStyle::with_template(
            "{prefix:>11} [{bar:28.cyan/blue}] {pos}/{len} {msg} | {elapsed_precise} elapsed, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Progress {
            bar,
            last_draw: Instant::now() - Duration::from_secs(1),
            unit,
        }
    }

    /// Starts the bar at `pos` (a resumed run).
    pub(crate) fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.bar.reset_eta();
    }

    /// Counts one finished batch.
    pub(crate) fn inc(&self) {
        self.bar.inc(1);
    }

    /// Shows the running figures; the message is refreshed a few times a second.
    pub(crate) fn show(&mut self, epoch: usize, epochs: usize, loss: f64, accuracy: f64, samples_per_sec: f64) {
        if self.last_draw.elapsed() >= Duration::from_millis(200) {
            self.last_draw = Instant::now();
            self.bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
            self.bar.set_message(format!(
                "loss {loss:.4} acc {accuracy:.4} {:.0} {}/s",
                samples_per_sec, self.unit
            ));
        }
    }

    /// Emits a log event (see `tracing`) with the bar out of the way, so that the line
    /// the binary's logger writes is not drawn over.
    pub(crate) fn log(&self, event: impl FnOnce()) {
        self.bar.suspend(event);
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
