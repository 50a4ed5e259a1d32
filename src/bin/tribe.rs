//! The toolbox: `tribe predict|encode|features|inspect`.
fn main() {
    std::process::exit(tribe_bids::cli::toolbox_main());
}
