//! One video decoded by several single-threaded decoders at once, each on its own stretch.
//!
//! libavcodec's frame threads decode neighbouring frames of one stream together, and each
//! waits for the rows of its reference frames that the others are still decoding. On 2 free
//! cores (AMD EPYC, 1080p H.264, 3 B frames), 2 frame threads decoded a 20 s clip in 2.2 s wall
//! using 3.9 CPU-s, where one thread took 3.2 s and 3.2 CPU-s: a 1.42x speed-up from the second
//! core. Two single-threaded decoders on separate copies of the clip, run at the same time,
//! each took 3.0–3.4 s: the second core is worth a whole core when the decoders share nothing.
//!
//! H.264 and HEVC let them share nothing at IDR pictures: nothing decoded after one refers to
//! anything before it. [`crate::stimulus::video::probe::clean_cuts`] finds the IDR pictures that
//! also split the frames cleanly in presentation order (the video's cut points), and
//! [`plan_segments`] cuts the needed frames into stretches there. Each worker takes the next
//! stretch, seeks to it, decodes it alone (skipping unneeded non-reference frames as
//! before), converts and crops
//! the frames some clip uses, and queues the small crops (196 KB at 256 x 256) for the clip
//! assembler, which takes the stretches in order. The frames, their pixels and their order are
//! the ones a single decoder gives; only the work is spread.
//!
//! The last stretch is decoded with frame threads: as the other workers finish, its threads take
//! their cores, instead of one core finishing a long stretch alone (x264's default GOP is 250
//! frames, so a 20 s clip at 30 fps has stretches of 250, 250 and 100 frames). Measured on
//! 2 cores (AMD EPYC), 8 alternating rounds per clip, 1080p H.264, whole frame preparation:
//! against one frame-threaded decoder, per-round median 1.053x (faster in 7 of 8) on the
//! 250-frame-GOP clip and 1.046x (7 of 8) on a 60-frame-GOP clip; with every stretch on one
//! thread, 1.06x and 0.96x (the 60-frame clip's five stretches left one worker with three).
//!
//! Memory stays bounded: workers may run at most [`LOOKAHEAD_SEGMENTS`] stretches ahead of the
//! assembler, and each stretch's queue holds at most [`LOOKAHEAD_BYTES`] of crops in total
//! over those stretches; a worker whose queue is full waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::frame_feed::{FeedStats, FrameCropper};
use super::processor::Geometry;
use crate::error::{Error, Result};
use crate::stimulus::video::{FrameDecoder, VideoInfo};

/// Stretches shorter than this many frames are merged with the next: each stretch opens the
/// file and a decoder again (a few milliseconds), and decoding from an IDR picture to the next
/// is the smallest unit anyway.
pub const MIN_SEGMENT_FRAMES: usize = 48;

/// How much of the second (third, ...) core libavcodec's frame threads are worth, from the
/// measurement in the module docs (2 threads: 1.42x one thread). [`plan_segments`] uses stretches
/// only when they are predicted to finish sooner than frame threads would.
const FRAME_THREAD_EFFICIENCY: f64 = 0.71;

/// The crops queued ahead of the clip assembler, in bytes, over all stretches in flight.
pub const LOOKAHEAD_BYTES: usize = 256 << 20;

/// Stretches in flight beyond the one the assembler reads, per worker.
const LOOKAHEAD_SEGMENTS: usize = 1;

/// One stretch of frames, decoded by one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The first frame: a cut point, except for the first stretch, which starts at the first
    /// needed frame (its decoder seeks to the keyframe before it).
    pub start: usize,
    /// The cut point the stretch ends before; `None` for the last stretch.
    pub end: Option<usize>,
    /// The stretch's last needed frame: decoding stops there.
    pub last_needed: usize,
    /// How many of its frames some clip uses.
    pub needed: usize,
}

/// Cut the needed frames into stretches at `cut_points`, each at least `min_frames` long and
/// about a third of an even share of `workers`; `None` when that gives fewer than two.
pub fn plan_segments(
    needed: &[bool],
    cut_points: &[usize],
    workers: usize,
    min_frames: usize,
) -> Option<Vec<Segment>> {
    let first = needed.iter().position(|&n| n)?;
    let last = needed.iter().rposition(|&n| n)?;
    let span = last + 1 - first;
    let target = min_frames.max(span / (3 * workers.max(1)));
    let mut bounds = vec![first];
    for &c in cut_points {
        if c > first && c <= last && c - bounds[bounds.len() - 1] >= target {
            bounds.push(c);
        }
    }
    // The last stretch may be short; then it joins the one before (if that one can end at
    // the stretch's end, which is the end of the needed frames, it can).
    if bounds.len() > 1 && last + 1 - bounds[bounds.len() - 1] < target / 2 {
        bounds.pop();
    }
    let mut segments = Vec::new();
    for (k, &start) in bounds.iter().enumerate() {
        let end = bounds.get(k + 1).copied();
        let stop = end.unwrap_or(last + 1);
        let count = needed[start..stop].iter().filter(|&&n| n).count();
        let Some(last_needed) = needed[start..stop].iter().rposition(|&n| n) else {
            continue; // nothing to decode here
        };
        segments.push(Segment {
            start,
            end,
            last_needed: start + last_needed,
            needed: count,
        });
    }
    (segments.len() >= 2).then_some(segments)
}

/// Whether `workers` single-threaded decoders on `segments` are predicted to finish sooner than
/// one decoder with as many frame threads (not when one stretch is much longer than the
/// others).
pub fn segments_are_faster(segments: &[Segment], workers: usize) -> bool {
    if workers < 2 {
        return false;
    }
    // The workers take stretches in order, each the next one as it finishes: predict when the
    // last finishes, with decoding cost proportional to frames.
    let cost = |s: &Segment| (s.last_needed + 1 - s.start) as f64;
    let mut loads = vec![0.0f64; workers];
    for s in segments {
        let least = loads
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least two workers");
        *least += cost(s);
    }
    let makespan = loads.iter().copied().fold(0.0, f64::max);
    let total: f64 = segments.iter().map(cost).sum();
    let frame_threads = total / (workers as f64 * FRAME_THREAD_EFFICIENCY);
    makespan < frame_threads
}

type Crop = Result<(usize, Vec<u8>)>;

/// Where the workers are, shared with the assembler.
struct Progress {
    /// The next stretch no worker has taken.
    next: usize,
    /// The stretch the assembler reads.
    reading: usize,
}

struct Shared {
    progress: Mutex<Progress>,
    moved: Condvar,
    stop: AtomicBool,
    /// Each stretch's sending end, taken by the worker that decodes it.
    senders: Mutex<Vec<Option<SyncSender<Crop>>>>,
    /// Workers still running.
    alive: AtomicUsize,
    stats: Mutex<FeedStats>,
}

/// The running workers and the stretches' queues, read in order.
pub struct SegmentFeed {
    queues: VecDeque<Receiver<Crop>>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl SegmentFeed {
    /// Start `workers` decoder threads on `segments` of `info`, sending the `needed` frames
    /// cropped by `geometry`.
    pub fn start(
        info: &VideoInfo,
        needed: Vec<bool>,
        segments: Vec<Segment>,
        workers: usize,
        geometry: Geometry,
    ) -> Result<Self> {
        let window = workers * (1 + LOOKAHEAD_SEGMENTS);
        let crop_bytes = 3 * geometry.crop_height * geometry.crop_width;
        let per_segment = (LOOKAHEAD_BYTES / (window + 1) / crop_bytes.max(1)).max(16);
        let (senders, queues): (Vec<_>, VecDeque<_>) = segments
            .iter()
            .map(|s| {
                let (tx, rx) = sync_channel(s.needed.clamp(1, per_segment));
                (Some(tx), rx)
            })
            .unzip();
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress {
                next: 0,
                reading: 0,
            }),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
            senders: Mutex::new(senders),
            alive: AtomicUsize::new(workers.min(segments.len())),
            stats: Mutex::new(FeedStats {
                decode_counts: vec![0; info.n_frames()],
                segments: segments.len(),
                ..Default::default()
            }),
        });
        let info = Arc::new(info.clone());
        let needed = Arc::new(needed);
        let segments = Arc::new(segments);
        let mut handles = Vec::new();
        for w in 0..workers.min(segments.len()) {
            let (info, needed, segments, mine) = (
                info.clone(),
                needed.clone(),
                segments.clone(),
                shared.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("video-decode-{w}"))
                .spawn(move || work(&info, &needed, &segments, workers, window, &mine, geometry));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Dropping it stops the workers already started.
                    drop(Self {
                        queues,
                        shared,
                        workers: handles,
                    });
                    return Err(Error::Other(format!(
                        "cannot start a video decoder thread: {e}"
                    )));
                }
            }
        }
        Ok(Self {
            queues,
            shared,
            workers: handles,
        })
    }

    /// The next needed frame, cropped, and its physical index; `None` once every one came.
    pub fn next_frame(&mut self) -> Result<Option<(usize, Vec<u8>)>> {
        while let Some(queue) = self.queues.front() {
            match queue.recv() {
                Ok(crop) => return crop.map(Some),
                Err(_) => {
                    // The stretch is done: its worker dropped the sending end.
                    self.queues.pop_front();
                    let mut p = self.shared.progress.lock().expect("progress lock");
                    p.reading += 1;
                    self.shared.moved.notify_all();
                }
            }
        }
        Ok(None)
    }

    /// Stop the workers (if they are still decoding) and return their counts.
    pub fn finish(mut self) -> Result<FeedStats> {
        self.stop()
    }

    fn stop(&mut self) -> Result<FeedStats> {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Dropping the queues makes a worker's next send fail; the lock orders the flag
        // before a worker's wait.
        self.queues.clear();
        drop(self.shared.progress.lock().expect("progress lock"));
        self.shared.moved.notify_all();
        let mut panicked = false;
        for h in self.workers.drain(..) {
            panicked |= h.join().is_err();
        }
        if panicked {
            return Err(Error::Other("a video decoder thread panicked".into()));
        }
        Ok(std::mem::take(
            &mut *self.shared.stats.lock().expect("stats lock"),
        ))
    }
}

impl Drop for SegmentFeed {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A worker: take the next stretch while the assembler is close enough behind, decode it.
fn work(
    info: &VideoInfo,
    needed: &[bool],
    segments: &[Segment],
    workers: usize,
    window: usize,
    shared: &Shared,
    geometry: Geometry,
) {
    let _alive = Alive(shared);
    let mut cropper = FrameCropper::new(info, geometry);
    let mut stats = FeedStats {
        decode_counts: vec![0; info.n_frames()],
        ..Default::default()
    };
    loop {
        let k = {
            let mut p = shared.progress.lock().expect("progress lock");
            while !shared.stop.load(Ordering::SeqCst)
                && p.next < segments.len()
                && p.next >= p.reading + window
            {
                p = shared.moved.wait(p).expect("progress lock");
            }
            if shared.stop.load(Ordering::SeqCst) || p.next >= segments.len() {
                break;
            }
            p.next += 1;
            p.next - 1
        };
        let Some(tx) = shared.senders.lock().expect("senders lock")[k].take() else {
            break;
        };
        // The last stretch gets frame threads: the other workers go idle as they finish, and
        // its frame threads take over their cores instead of leaving one stretch on one core.
        let threads = if k + 1 == segments.len() { workers } else { 1 };
        match decode_segment(
            info,
            threads,
            needed,
            &segments[k],
            &mut cropper,
            &tx,
            &mut stats,
        ) {
            Ok(true) => {}
            Ok(false) => break, // the assembler stopped
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    let mut all = shared.stats.lock().expect("stats lock");
    all.frames_decoded += stats.frames_decoded;
    all.frames_skipped += stats.frames_skipped;
    for (a, c) in all.decode_counts.iter_mut().zip(&stats.decode_counts) {
        *a += c;
    }
}

/// Marks a worker as running; when the last one ends (even by a panic), the stretches nobody
/// took are closed, so that the assembler reading them gets "ended" (and reports the missing
/// frames) instead of waiting for ever.
struct Alive<'a>(&'a Shared);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        if self.0.alive.fetch_sub(1, Ordering::SeqCst) == 1
            && let Ok(mut senders) = self.0.senders.lock()
        {
            senders.clear();
        }
    }
}

/// Decode one stretch, sending its needed frames cropped; false if the assembler stopped.
fn decode_segment(
    info: &VideoInfo,
    threads: usize,
    needed: &[bool],
    seg: &Segment,
    cropper: &mut FrameCropper<'_>,
    tx: &SyncSender<Crop>,
    stats: &mut FeedStats,
) -> Result<bool> {
    let mut dec = FrameDecoder::open_segment(info, seg.start, seg.end, threads)?;
    dec.set_needed_frames(needed.to_vec());
    let mut more = true;
    while let Some(i) = dec.next_frame()? {
        stats.decode_counts[i] += 1;
        if i >= seg.start && needed[i] {
            let mut crop = vec![0u8; cropper.crop_len()];
            cropper.crop(dec.take_frame()?, &mut crop)?;
            if tx.send(Ok((i, crop))).is_err() {
                more = false;
                break;
            }
        }
        if i >= seg.last_needed {
            break;
        }
    }
    stats.frames_decoded += dec.frames_decoded;
    stats.frames_skipped += dec.frames_skipped;
    Ok(more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(n: usize, f: impl Fn(usize) -> bool) -> Vec<bool> {
        (0..n).map(f).collect()
    }

    /// Stretches start at cut points, end at the next chosen one, hold every needed frame
    /// once, and skip cut points that would make a stretch shorter than the minimum.
    #[test]
    fn stretches_cover_the_needed_frames_at_cut_points() {
        let needed = marks(600, |i| i % 2 == 0);
        let segs = plan_segments(&needed, &[100, 250, 260, 500], 2, 48).unwrap();
        assert_eq!(
            segs.iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(),
            vec![
                (0, Some(100)),
                (100, Some(250)),
                (250, Some(500)),
                (500, None)
            ]
        );
        assert_eq!(segs.iter().map(|s| s.needed).sum::<usize>(), 300);
        assert_eq!(segs[3].last_needed, 598);
        assert_eq!(segs[1].last_needed, 248);
    }

    /// The first stretch starts at the first needed frame; stretches without needed frames
    /// are left out; cut points outside the needed frames are ignored.
    #[test]
    fn stretches_start_at_the_first_needed_frame_and_skip_empty_ones() {
        let needed = marks(1000, |i| (120..400).contains(&i) || (700..990).contains(&i));
        // Stretches of at least (990 - 120) / 6 = 145 frames: the cut at 400 is skipped.
        let segs = plan_segments(&needed, &[50, 300, 400, 550, 700, 995], 2, 48).unwrap();
        assert_eq!(
            segs.iter()
                .map(|s| (s.start, s.end, s.last_needed))
                .collect::<Vec<_>>(),
            vec![
                (120, Some(300), 299),
                (300, Some(550), 399),
                (700, None, 989)
            ]
        );
    }

    /// Frame threads are kept where stretches would not be faster: one worker, no cut
    /// points, or one long stretch and a short one.
    #[test]
    fn frame_threads_are_kept_where_stretches_would_not_help() {
        let needed = vec![true; 600];
        let faster = |cuts: &[usize], workers| {
            plan_segments(&needed, cuts, workers, 48)
                .is_some_and(|s| segments_are_faster(&s, workers))
        };
        assert!(plan_segments(&needed, &[], 2, 48).is_none());
        assert!(!faster(&[300], 1));
        assert!(!faster(&[540], 2));
        assert!(faster(&[300], 2));
        // The bench clip's keyframes (x264's 250-frame GOPs): 350 frames on the busier worker
        // against 600 / 1.42 with frame threads.
        assert!(faster(&[250, 500], 2));
    }

    /// A short last stretch joins the one before it.
    #[test]
    fn a_short_last_stretch_joins_the_one_before() {
        let needed = vec![true; 600];
        let segs = plan_segments(&needed, &[200, 400, 590], 2, 48).unwrap();
        assert_eq!(
            segs.iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(),
            vec![(0, Some(200)), (200, Some(400)), (400, None)]
        );
    }
}
