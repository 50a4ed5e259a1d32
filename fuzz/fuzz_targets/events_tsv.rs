//! Arbitrary bytes into the events.tsv parser: it must return a value or `Error::Tsv`, never
//! panic, and what it returns must hold the reader's promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tribe_bids::Error;
use tribe_bids::bids::Events;

fuzz_target!(|data: &[u8]| {
    match Events::parse(data, Path::new("fuzz_events.tsv")) {
        Ok(ev) => {
            assert!(
                ev.columns.len() >= 2 && ev.columns[0] == "onset" && ev.columns[1] == "duration"
            );
            let typed = ["trial_type", "stim_file"]
                .iter()
                .filter(|c| ev.columns.iter().any(|x| x == *c))
                .count();
            let mut last_line = 1;
            for r in &ev.rows {
                assert!(r.line > last_line, "line numbers increase");
                last_line = r.line;
                assert!(r.onset.is_none_or(f64::is_finite));
                assert!(r.duration.is_none_or(|d| d.is_finite() && d >= 0.0));
                assert_eq!(
                    r.other.len(),
                    ev.columns.len() - 2 - typed,
                    "every other column is kept by name"
                );
            }
        }
        Err(Error::Tsv {
            line, message, fix, ..
        }) => {
            assert!(line >= 1 && !message.is_empty() && !fix.is_empty());
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
});
