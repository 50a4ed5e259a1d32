//! Progress bars (indicatif) that coexist with log lines (tracing).
//!
//! Log lines written while bars are drawn would tear them, so the tracing writer goes through
//! `MultiProgress::suspend`, which clears the bars, prints the line and redraws them. When stderr
//! is not a terminal (Slurm logs, CI) indicatif hides the bars and only the log lines remain.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The process-wide bar set.
pub fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A bar for `len` steps of `what` (a participant, a run, a stage).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = bars().add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner:.green} {prefix:<28.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A tracing writer that suspends the bars while a line is written.
#[derive(Clone, Copy, Default)]
pub struct SuspendingStderr;

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SuspendingStderr {
    type Writer = SuspendingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        SuspendingStderr
    }
}
