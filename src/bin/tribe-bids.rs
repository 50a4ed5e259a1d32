//! The BIDS-App: `tribe-bids BIDS_DIR OUTPUT_DIR {participant,group} [options]`.
fn main() {
    std::process::exit(tribe_bids::cli::bids_app_main());
}
