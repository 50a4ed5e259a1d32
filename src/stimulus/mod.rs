//! What a participant saw and heard: the stimulus timeline, video and audio decoding, words.

pub mod chunks;
pub mod video;
