//! Frame preparation throughput for the video extractor (run: `bench/video_prep.sh`).
//!
//! `cargo bench --bench video_prep -- MODE FILE` with MODE:
//! - `decode`: our decoder alone, every frame out of libavcodec, nothing converted;
//! - `stages`: decode, then RGB conversion, resize + crop and normalization of the frames the
//!   clips use, each stage timed on its own (one thread, to show where the time goes);
//! - `prep`: what the extractor does before the model: probe, plan, then every 0.5 s bin's
//!   64-frame clip assembled as normalized f32 pixels, ready for V-JEPA2.
//!
//! Prints `key=value` lines that bench/video_prep.sh collects. Wall seconds include opening
//! the file; CPU seconds (user + system, all threads) come from /proc/self/stat.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use tribe_bids::features::video::frame_feed::Decoding;
use tribe_bids::features::video::frames::{ClipAssembler, VideoChunk, plan_video_clips};
use tribe_bids::features::video::processor::{ProcessorConfig, Resizer};
use tribe_bids::stimulus::chunks;
use tribe_bids::stimulus::video::{FrameDecoder, Region, VideoInfo};

fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The released plan: 60 s chunks, one 64-frame clip over 4 s per 0.5 s bin.
fn plan(info: &VideoInfo) -> Vec<tribe_bids::features::video::frames::ClipJob> {
    let chunks: Vec<VideoChunk> =
        chunks::chunk(info.duration, chunks::MAX_CHUNK_S, chunks::MIN_CHUNK_S)
            .into_iter()
            .map(|c| VideoChunk {
                start: c.offset,
                offset: c.offset,
                duration: c.duration,
            })
            .collect();
    plan_video_clips(info, &chunks, 64, 4.0, 0.0, info.duration).unwrap()
}

fn report(prefix: &str, info: &VideoInfo, frames: usize, wall: f64, cpu: f64) {
    println!("{prefix}_wall_s={wall:.3}");
    println!("{prefix}_cpu_s={cpu:.2}");
    println!("{prefix}_fps={:.1}", frames as f64 / wall);
    println!("{prefix}_x_realtime={:.2}", info.duration / wall);
}

fn bench_decode(path: &Path) {
    let (t0, c0) = (Instant::now(), cpu_s());
    let info = VideoInfo::open(path).unwrap();
    let mut dec = FrameDecoder::open(&info, 0).unwrap();
    let mut n = 0;
    while dec.next_frame().unwrap().is_some() {
        n += 1;
    }
    report(
        "ours_decode",
        &info,
        n,
        t0.elapsed().as_secs_f64(),
        cpu_s() - c0,
    );
}

fn bench_stages(path: &Path) {
    let info = VideoInfo::open(path).unwrap();
    let jobs = plan(&info);
    let used: BTreeSet<usize> = jobs.iter().flat_map(|j| j.frames.iter().copied()).collect();
    let n = used.len() as f64;
    // Decoding with and without RGB conversion of the used frames: the difference is the
    // conversion's CPU time (decoder threads included in both).
    let c0 = cpu_s();
    let mut dec = FrameDecoder::open(&info, 0).unwrap();
    while dec.next_frame().unwrap().is_some() {}
    let decode_cpu = cpu_s() - c0;
    let c0 = cpu_s();
    let mut dec = FrameDecoder::open(&info, 0).unwrap();
    let mut sample = None;
    while let Some(i) = dec.next_frame().unwrap() {
        if used.contains(&i) {
            let rgb = dec.rgb().unwrap();
            if sample.is_none() && i >= info.n_frames() / 2 {
                sample = Some(rgb.to_packed());
            }
        }
    }
    let rgb_cpu = cpu_s() - c0 - decode_cpu;
    // The same with only the part of each frame the resize reads converted.
    let processor = ProcessorConfig::for_crop(256);
    let resizer = Resizer::new(processor.geometry(info.height, info.width));
    let region = Region::covering(
        resizer.source_rows(),
        resizer.source_cols(),
        info.height,
        info.width,
    );
    let c0 = cpu_s();
    let mut dec = FrameDecoder::open(&info, 0).unwrap();
    dec.set_region(region);
    let mut converted = None;
    while let Some(i) = dec.next_frame().unwrap() {
        if used.contains(&i) {
            let v = dec.rgb().unwrap();
            converted.get_or_insert((v.width, v.height));
        }
    }
    let region_cpu = cpu_s() - c0 - decode_cpu;
    // Resize + crop and normalization, one thread, on one frame many times.
    let rgb = sample.unwrap();
    let plane = 3 * 256 * 256;
    let mut crop = vec![0u8; plane];
    let mut px = vec![0f32; plane];
    // TRIBE_BENCH_STAGE_REPS: more repetitions, e.g. to profile the resize with perf.
    let reps: usize = std::env::var("TRIBE_BENCH_STAGE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let time = |f: &mut dyn FnMut()| {
        f();
        let (t, c) = (Instant::now(), cpu_s());
        for _ in 0..reps {
            f();
        }
        (
            1e3 * t.elapsed().as_secs_f64() / reps as f64,
            1e3 * (cpu_s() - c) / reps as f64,
        )
    };
    let (resize_ms, resize_cpu_ms) = time(&mut || {
        resizer.resize_crop(&rgb, info.width * 3, &mut crop);
        std::hint::black_box(&crop);
    });
    let (norm_ms, norm_cpu_ms) = time(&mut || {
        processor.normalize_into(&crop, &mut px);
        std::hint::black_box(&px);
    });
    println!(
        "stage_frames_decoded={} stage_frames_used={}",
        dec.frames_decoded,
        used.len()
    );
    println!(
        "stage_decode_cpu_s={decode_cpu:.2} ({:.2} ms/frame)",
        1e3 * decode_cpu / dec.frames_decoded as f64
    );
    println!(
        "stage_rgb_cpu_s={rgb_cpu:.2} ({:.2} ms/used frame)",
        1e3 * rgb_cpu / n
    );
    let (cw, chh) = converted.unwrap_or((0, 0));
    println!(
        "stage_rgb_region_cpu_s={region_cpu:.2} ({:.2} ms/used frame; {cw}x{chh} of {}x{} converted)",
        1e3 * region_cpu / n,
        info.width,
        info.height
    );
    println!(
        "stage_resize_crop_ms_per_frame={resize_ms:.2} cpu={resize_cpu_ms:.2} (x {} used frames = {:.2} s)",
        used.len(),
        resize_cpu_ms * n / 1e3
    );
    println!(
        "stage_normalize_ms_per_frame={norm_ms:.2} cpu={norm_cpu_ms:.2} (x {} used frames = {:.2} s)",
        used.len(),
        norm_cpu_ms * n / 1e3
    );
}

fn bench_prep(path: &Path) {
    let (t0, c0) = (Instant::now(), cpu_s());
    let info = VideoInfo::open(path).unwrap();
    let jobs = plan(&info);
    let processor = ProcessorConfig::for_crop(256);
    let decoding = Decoding::from_env().unwrap();
    let mut asm = ClipAssembler::new(&info, &jobs, &processor).with_decoding(decoding);
    let mut clips = 0;
    while let Some((_, clip)) = asm.next_clip().unwrap() {
        std::hint::black_box(&clip);
        clips += 1;
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
    let st = asm.into_stats().unwrap();
    println!(
        "video={}x{} frames={} duration_s={:.2} clips={clips}",
        info.width,
        info.height,
        info.n_frames(),
        info.duration
    );
    println!(
        "ours_frames_decoded={} ours_frames_skipped={} ours_frames_preprocessed={} ours_max_buffered={} ours_decode_segments={} ({decoding:?}, {}={:?})",
        st.frames_decoded,
        st.frames_skipped,
        st.frames_preprocessed,
        st.max_buffered_frames,
        st.decode_segments,
        tribe_bids::features::video::frame_feed::ENV_VAR,
        std::env::var(tribe_bids::features::video::frame_feed::ENV_VAR).unwrap_or_default()
    );
    report("ours_prep", &info, st.frames_decoded, wall, cpu);
    println!("ours_prep_peak_rss_mb={:.0}", peak_rss_mb());
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let path = args.get(1).map(Path::new);
    match (args.first().map(String::as_str), path) {
        (Some("decode"), Some(p)) => bench_decode(p),
        (Some("stages"), Some(p)) => bench_stages(p),
        (Some("prep"), Some(p)) => bench_prep(p),
        _ => eprintln!("usage: video_prep decode|stages|prep FILE"),
    }
}
