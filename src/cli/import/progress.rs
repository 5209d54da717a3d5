//! How a long import shows its progress: on a terminal, a bar per file with the share read, the
//! rate and the time left, then one for the runs written (indicatif); otherwise (a log, a pipe)
//! a plain line every ten seconds. Rejected lines are printed above the bar.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{ImportSink, ImportSummary};

/// How often a plain progress line is printed when standard error is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: Option<ProgressBar>,
    file: String,
    started: Instant,
    last_plain: Instant,
    /// Whether the bar shows the writing (after the reading).
    writing: bool,
}

impl Progress {
    /// A bar on a terminal, plain lines otherwise.
    pub fn new(terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{wide_bar}] {percent:>3}% {binary_bytes}/{binary_total_bytes}, {eta} left",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            file: String::new(),
            started: Instant::now(),
            last_plain: Instant::now(),
            writing: false,
        }
    }

    /// Removes the bar (before the final summary).
    pub fn clear(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl ImportSink for Progress {
    fn rejected(&mut self, line: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn note(&mut self, message: String) {
        self.rejected(message);
    }

    fn writing(&mut self, written: u64, total: u64) {
        let message = format!("writing: {written} of {total} runs");
        match &self.bar {
            Some(bar) => {
                if !self.writing {
                    self.writing = true;
                    bar.reset();
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{wide_bar}] {percent:>3}%, {eta} left",
                        )
                        .expect("the template is valid")
                        .progress_chars("=> "),
                    );
                    bar.set_length(total);
                }
                bar.set_position(written);
                bar.set_message(message);
            }
            None if self.last_plain.elapsed() >= PLAIN_EVERY => {
                self.last_plain = Instant::now();
                eprintln!("importing, {message}");
            }
            None => {}
        }
    }

    fn progress(&mut self, file: &str, offset: u64, size: Option<u64>, summary: &ImportSummary) {
        let rate = summary.lines as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let message = format!(
            "{file}: {} lines, {} rejected, {rate:.0} lines/s",
            summary.lines, summary.rejected
        );
        match &self.bar {
            Some(bar) => {
                if self.file != file {
                    self.file = file.to_string();
                    bar.reset();
                    bar.set_length(size.unwrap_or(0));
                }
                bar.set_position(offset);
                bar.set_message(message);
            }
            None if self.last_plain.elapsed() >= PLAIN_EVERY => {
                self.last_plain = Instant::now();
                let share = match size {
                    Some(size) if size > 0 => format!(" ({}%)", offset * 100 / size),
                    _ => String::new(),
                };
                eprintln!("importing {message}{share}");
            }
            None => {}
        }
    }
}
