//! The decoder on a thread of its own, handing decoded frames to the clip assembler.
//!
//! Decoding, the RGB conversion and the resize used to run one after the other on the
//! assembler's thread. libavcodec's frame threads only decode a frame or two ahead of the
//! thread that feeds them packets, so while that thread converted and resized a frame (3 ms at
//! 1080p) they ran out of work: on 2 cores the whole preparation used 1.4 of them. This thread
//! does nothing but feed the decoder and pass on the frames, a few ahead, while the assembler
//! converts and resizes the ones already decoded. The frames travel as reference-counted
//! FFmpeg buffers; nothing is copied.
//!
//! Only the frames some clip uses are sent, in decoding order, and decoding stops at the last
//! of them. Dropping the feed stops the thread at its next frame.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::stimulus::video::{DecodedFrame, FrameDecoder, VideoInfo};

/// Decoded frames waiting for the assembler: enough to ride out a slow resize, few enough that
/// memory stays small (4 decoded 1080p frames are 12 MB).
const DEPTH: usize = 4;

/// What the decoder thread counted.
#[derive(Debug, Clone, Default)]
pub struct FeedStats {
    pub frames_decoded: usize,
    /// Frames no clip uses that were never decoded (H.264 non-reference frames).
    pub frames_skipped: usize,
    /// How many times each physical frame came out of the decoder.
    pub decode_counts: Vec<u32>,
}

/// A running decoder thread.
pub struct FrameFeed {
    rx: Option<Receiver<Result<(usize, DecodedFrame)>>>,
    thread: Option<JoinHandle<FeedStats>>,
}

impl FrameFeed {
    /// Start decoding `info` on a new thread, passing on the frames `needed` marks.
    ///
    /// The decoder gets two frame threads more than the calling rayon pool has threads
    /// (`--nprocs`): frame threads wait on each other's reference rows and on this thread's
    /// hand-overs, and two more frames in flight keep the cores busy through those waits.
    /// In 4 alternating rounds on 2 cores (1080p H.264, the released clip plan), 4 frame
    /// threads gave 9.8–11.0x real time, 3 gave 9.2–10.5x and 2 gave 8.4–10.3x.
    pub fn start(info: &VideoInfo, needed: Vec<bool>) -> Result<Self> {
        let threads = rayon::current_num_threads() + 2;
        let info = info.clone();
        let (tx, rx) = sync_channel(DEPTH);
        let thread = std::thread::Builder::new()
            .name("video-decode".into())
            .spawn(move || {
                let mut stats = FeedStats {
                    decode_counts: vec![0; info.n_frames()],
                    ..Default::default()
                };
                if let Err(e) = decode(&info, &needed, threads, &tx, &mut stats) {
                    // The assembler may have stopped already; then nobody needs the error.
                    let _ = tx.send(Err(e));
                }
                stats
            })
            .map_err(|e| Error::Other(format!("cannot start the video decoder thread: {e}")))?;
        Ok(Self {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// The next needed frame and its physical index; `None` once every needed frame came.
    pub fn next_frame(&mut self) -> Result<Option<(usize, DecodedFrame)>> {
        match self.rx.as_ref().map(Receiver::recv) {
            Some(Ok(Ok(frame))) => Ok(Some(frame)),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) | None => Ok(None),
        }
    }

    /// Stop the thread (if it is still decoding) and return its counts.
    pub fn finish(mut self) -> Result<FeedStats> {
        self.stop()
    }

    fn stop(&mut self) -> Result<FeedStats> {
        // Closing the channel makes the thread's next send fail, and it returns.
        drop(self.rx.take());
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::Other("the video decoder thread panicked".into())),
            None => Ok(FeedStats::default()),
        }
    }
}

impl Drop for FrameFeed {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The thread's work: decode from the first needed frame to the last, sending the needed ones.
fn decode(
    info: &VideoInfo,
    needed: &[bool],
    threads: usize,
    tx: &SyncSender<Result<(usize, DecodedFrame)>>,
    stats: &mut FeedStats,
) -> Result<()> {
    let (Some(first), Some(last)) = (
        needed.iter().position(|&n| n),
        needed.iter().rposition(|&n| n),
    ) else {
        return Ok(());
    };
    let mut dec = FrameDecoder::open_with_threads(info, first, threads)?;
    dec.set_needed_frames(needed.to_vec());
    while let Some(i) = dec.next_frame()? {
        stats.decode_counts[i] += 1;
        if needed.get(i) == Some(&true) {
            let frame = dec.take_frame()?;
            if tx.send(Ok((i, frame))).is_err() {
                break; // the assembler stopped
            }
        }
        if i >= last {
            break;
        }
    }
    stats.frames_decoded = dec.frames_decoded;
    stats.frames_skipped = dec.frames_skipped;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_video(dir: &std::path::Path) -> VideoInfo {
        let p = crate::stimulus::video::test_media::lavfi_video(
            dir,
            "feed.mp4",
            "testsrc2=d=4:s=128x96:r=24",
            &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
        );
        VideoInfo::open(&p).unwrap()
    }

    /// The needed frames come out once each, in order; decoding stops at the last needed
    /// frame; and a feed dropped half-way stops its thread instead of hanging.
    #[test]
    fn needed_frames_come_in_order_and_a_dropped_feed_stops() {
        let dir = tempfile::tempdir().unwrap();
        let info = test_video(dir.path());
        let n = info.n_frames();
        let needed: Vec<bool> = (0..n).map(|i| i % 3 == 0 && i < n / 2).collect();
        let mut feed = FrameFeed::start(&info, needed.clone()).unwrap();
        let mut got = Vec::new();
        while let Some((i, _frame)) = feed.next_frame().unwrap() {
            got.push(i);
        }
        let want: Vec<usize> = (0..n).filter(|&i| needed[i]).collect();
        assert_eq!(got, want);
        let stats = feed.finish().unwrap();
        let last = *want.last().unwrap();
        assert!(stats.decode_counts[last + 1..].iter().all(|&c| c == 0));
        assert!(stats.decode_counts.iter().all(|&c| c <= 1));

        let mut feed = FrameFeed::start(&info, vec![true; n]).unwrap();
        assert_eq!(feed.next_frame().unwrap().map(|f| f.0), Some(0));
        let t = std::time::Instant::now();
        drop(feed);
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
}
