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
    let result = bids_app::RunConfig::from_raw(raw, argv).and_then(|cfg| {
        use_threads(cfg.nprocs);
        use_matrix_backend()?;
        bids_app::run(&cfg)
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tribe-bids: error: {e}");
            e.exit_code()
        }
    }
}

/// Cap every CPU pool at `n` threads (`--nprocs`): rayon's global pool, which our kernels and
/// faer use, and candle's matrix products, which size themselves from `RAYON_NUM_THREADS`.
/// Called once, before any pool starts or any other thread exists.
fn use_threads(n: usize) {
    // SAFETY: no other thread runs yet (logging is synchronous, bars and the Ctrl-C handler
    // start later), so nothing can read the environment while it changes.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    if rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .is_err()
    {
        tracing::debug!("the thread pool was already configured");
    }
}

/// Settle the CPU matrix library (`TRIBE_BLAS`, see `features::blas`) before any work, so that
/// a bad setting fails fast with a usage error, and say in the log which one runs. The video
/// decoding override (`TRIBE_VIDEO_DECODE`) is checked here too, for the same reason.
fn use_matrix_backend() -> crate::error::Result<()> {
    crate::features::blas::init().map_err(|e| crate::error::Error::Usage(e.to_string()))?;
    tracing::info!("CPU matrix products: {}", crate::features::blas::describe());
    crate::features::video::frame_feed::Decoding::from_env()?;
    Ok(())
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
    match use_matrix_backend().and_then(|()| toolbox::run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tribe: error: {e}");
            e.exit_code()
        }
    }
}
