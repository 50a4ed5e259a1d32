//! Ctrl-C: stop at the next safe point.
//!
//! Every output is written to a temp file and renamed, so stopping anywhere leaves no partial
//! file. The handler only raises a flag; long loops call [`check`] between windows and stages and
//! unwind with `Error::Interrupted` (exit 130). A second Ctrl-C exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

static STOP: AtomicBool = AtomicBool::new(false);

/// Install the handler (once per process; later calls are harmless).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\ntribe-bids: interrupted twice, exiting now");
            std::process::exit(crate::error::exit::INTERRUPTED);
        }
        eprintln!(
            "\ntribe-bids: interrupt received; stopping after the current step (Ctrl-C again to exit now)"
        );
    });
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// For tests and hooks: raise the flag as a Ctrl-C would.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
