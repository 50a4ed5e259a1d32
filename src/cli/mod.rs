//! Command lines of the two binaries: `tribe-bids` (the BIDS-App) and `tribe` (the toolbox).
//!
//! Library code returns typed [`crate::Error`]s; this is the edge where they become a message on
//! stderr and an exit code from the contract table.

pub mod bids_app;
pub mod first_level;
pub mod group;
pub mod interrupt;
pub mod networks;
pub mod participant;
pub mod plan;
pub mod progress;
pub mod report;
pub mod toolbox;

use clap::Parser;

/// Logging to stderr; `-v` info, `-vv` debug. `RUST_LOG` overrides.
pub fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0 => "warn,tribe_bids=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Entry point of `tribe-bids`; returns the process exit code.
pub fn bids_app_main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let raw = match bids_app::RawArgs::try_parse_from(&argv) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                crate::error::exit::USAGE
            } else {
                0
            };
        }
    };
    init_logging(raw.verbose);
    let result = bids_app::RunConfig::from_raw(raw, argv).and_then(|cfg| bids_app::run(&cfg));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tribe-bids: error: {e}");
            e.exit_code()
        }
    }
}

/// Entry point of `tribe`; returns the process exit code.
pub fn toolbox_main() -> i32 {
    let cli = match toolbox::ToolboxCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                crate::error::exit::USAGE
            } else {
                0
            };
        }
    };
    init_logging(cli.verbose);
    match toolbox::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tribe: error: {e}");
            e.exit_code()
        }
    }
}
