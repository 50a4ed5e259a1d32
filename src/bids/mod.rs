//! The BIDS layer (ours): dataset layout, entities, sidecar inheritance, events, derivatives naming.
//!
//! Entry points: [`Layout::open`] indexes a dataset, [`Layout::runs`] returns the selected runs
//! ([`Run`]) with everything the pipeline needs (timing, volume count, events, stimuli), and
//! [`Filters`] carries the BIDS-App label options and `--bids-filter-file`. [`Entities`] builds
//! file names in canonical order for the derivatives writer.

pub mod derivatives;
pub mod description;
pub mod entities;
pub mod events;
pub mod filters;
pub mod ignore;
pub mod inheritance;
pub mod layout;
pub mod nifti_header;
pub mod stimuli;
pub mod timing;

pub use description::DatasetDescription;
pub use entities::{BidsName, ENTITY_ORDER, Entities};
pub use events::{EventRow, Events};
pub use filters::{Constraint, Filters};
pub use layout::{Layout, Run};
pub use nifti_header::{BoldHeader, read_bold_header};
pub use stimuli::Stimulus;
pub use timing::{DEFAULT_SLICE_TIME_REF, RunTiming, VolumeOnsets};
