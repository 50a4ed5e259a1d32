//! Command lines of the two binaries: `tribe-bids` (the BIDS-App) and `tribe` (the toolbox).

pub mod toolbox;

/// Entry point of `tribe-bids`; returns the process exit code.
pub fn bids_app_main() -> i32 {
    0
}

/// Entry point of `tribe`; returns the process exit code.
pub fn toolbox_main() -> i32 {
    use clap::Parser;
    let cli = match toolbox::ToolboxCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { crate::error::exit::USAGE } else { 0 };
        }
    };
    match toolbox::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tribe: error: {e}");
            e.exit_code()
        }
    }
}
