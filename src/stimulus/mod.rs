//! What a participant saw and heard: the stimulus timeline, video and audio decoding, words.

pub mod audio;
pub mod chunks;
pub mod timeline;
pub mod video;
pub mod words;
