//! Frame choice against the reference itself: moviepy 2.2.1's reader logic driving the real
//! ffmpeg CLI (as the reference does), on videos whose frames carry their own number.
//!
//! Each test video is made at test time with the ffmpeg CLI: `geq` paints frame N's binary
//! digits as 16 black/white columns, so a decoded frame tells its source index even after
//! yuv420p H.264 coding. The oracle below re-implements moviepy's `FFMPEG_VideoReader`
//! (`get_frame`, `initialize` with its `-ss` pair, `skip_frames`, `read_frame`) in a few lines
//! and runs the ffmpeg binary exactly as moviepy does, so duplication, dropping and seeking
//! are the CLI's own. Our frame picker never runs ffmpeg and must agree frame for frame.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tribe_bids::features::video::clips::{ClipTimes, chunk_clip_frames};
use tribe_bids::stimulus::video::VideoInfo;

const W: usize = 256;
const H: usize = 32;

/// Make a numbered video: `rate` (e.g. "30000/1001"), `seconds`, optional timestamp rewrite
/// (variable frame rate) and an optional silent audio track.
fn numbered_video(
    dir: &Path,
    name: &str,
    rate: &str,
    seconds: f64,
    setpts: Option<&str>,
    audio: bool,
) -> PathBuf {
    let out = dir.join(name);
    let mut vf = String::from("geq=lum='255*mod(floor(N/pow(2\\,floor(X/16)))\\,2)':cb=128:cr=128");
    if let Some(e) = setpts {
        vf = format!("{vf},setpts='{e}'");
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("color=c=black:s={W}x{H}:r={rate}:d={seconds}"),
    ]);
    if audio {
        cmd.args([
            "-f",
            "lavfi",
            "-i",
            &format!("anullsrc=r=44100:cl=mono:d={seconds}"),
        ]);
    }
    cmd.args([
        "-vf", &vf, "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-g", "24", "-bf", "0",
    ]);
    cmd.args(["-fps_mode", "passthrough"]);
    if audio {
        cmd.args(["-c:a", "aac", "-shortest"]);
    }
    let st = cmd.arg(&out).status().expect("ffmpeg CLI");
    assert!(st.success(), "making {name} failed");
    out
}

/// The frame number painted into an RGB24 frame.
fn frame_number(rgb: &[u8]) -> usize {
    (0..16)
        .map(|k| ((rgb[((H / 2) * W + k * 16 + 8) * 3] > 128) as usize) << k)
        .sum()
}

/// moviepy's duration and fps from `ffmpeg -i` (its regexes and NTSC snapping).
fn moviepy_infos(path: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg").arg("-i").arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let dur = text.split("Duration: ").nth(1).unwrap()[..11].to_string();
    let p: Vec<f64> = dur.split(':').map(|x| x.parse().unwrap()).collect();
    let duration = 0.0 + p[2] + 60.0 * p[1] + 3600.0 * p[0];
    let line = text.lines().find(|l| l.contains("Video:")).unwrap();
    let fps_txt = line
        .split(" fps")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    let mut fps: f64 = fps_txt.parse().unwrap();
    for x in [23.0, 24.0, 25.0, 30.0, 50.0] {
        if fps != x && (fps - x * 1000.0 / 1001.0).abs() < 0.01 {
            fps = x * 1000.0 / 1001.0;
        }
    }
    (duration, fps)
}

/// moviepy 2.2.1 `FFMPEG_VideoReader`, reading from the real ffmpeg CLI.
struct Oracle {
    path: PathBuf,
    fps: f64,
    proc: Option<Child>,
    pos: i64,
    last: Option<usize>,
}

impl Oracle {
    fn new(path: &Path, fps: f64) -> Self {
        let mut o = Self {
            path: path.into(),
            fps,
            proc: None,
            pos: 0,
            last: None,
        };
        o.initialize(0.0);
        o
    }

    fn frame_number_at(&self, t: f64) -> i64 {
        (self.fps * t + 0.00001) as i64
    }

    fn initialize(&mut self, t: f64) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.pos = self.frame_number_at(t);
        let start = if self.pos != 0 {
            self.pos as f64 * (1.0 / self.fps) - 0.00001
        } else {
            0.0
        };
        let mut cmd = Command::new("ffmpeg");
        if start != 0.0 {
            let offset = start.min(1.0);
            cmd.args(["-ss", &format!("{:.6}", start - offset), "-i"])
                .arg(&self.path)
                .args(["-ss", &format!("{offset:.6}")]);
        } else {
            cmd.arg("-i").arg(&self.path);
        }
        cmd.args([
            "-loglevel",
            "error",
            "-f",
            "image2pipe",
            "-vf",
            &format!("scale={W}:{H}"),
            "-sws_flags",
            "bicubic",
        ]);
        cmd.args(["-pix_fmt", "rgb24", "-vcodec", "rawvideo", "-"]);
        self.proc = Some(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        self.read_frame();
    }

    fn read_raw(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; W * H * 3];
        let out = self.proc.as_mut().unwrap().stdout.as_mut().unwrap();
        let mut got = 0;
        while got < buf.len() {
            match out.read(&mut buf[got..]).unwrap() {
                0 => return None,
                n => got += n,
            }
        }
        Some(buf)
    }

    fn read_frame(&mut self) {
        if let Some(f) = self.read_raw() {
            self.last = Some(frame_number(&f));
        }
        self.pos += 1;
    }

    fn get_frame(&mut self, t: f64) -> usize {
        let pos = self.frame_number_at(t) + 1;
        if pos == self.pos {
        } else if pos < self.pos || pos > self.pos + 100 {
            self.initialize(t);
        } else {
            for _ in 0..pos - self.pos - 1 {
                self.read_raw();
            }
            self.pos = pos - 1;
            self.read_frame();
        }
        self.last.unwrap()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Compare every clip frame of one chunk `[offset, offset + duration)`, released setting (64
/// frames over 4 s), with the oracle's. Returns how many bins differ from the plain index rule
/// `int(fps * t + 1e-5)` (to show when seeking and resampling matter).
fn check(path: &Path, offset: f64, duration: f64) -> usize {
    let info = VideoInfo::open(path).unwrap();
    let (mp_dur, mp_fps) = moviepy_infos(path);
    assert_eq!(info.duration, mp_dur, "{}: duration", path.display());
    assert_eq!(info.fps, mp_fps, "{}: fps", path.display());
    let ours = chunk_clip_frames(&info, offset, duration, 64, 4.0).unwrap();
    let times = ClipTimes::new(offset, duration, 64, 4.0);
    assert_eq!(ours.len(), times.n_bins());
    let mut oracle = Oracle::new(path, mp_fps);
    let mut differ = 0;
    for (k, ours_k) in ours.iter().enumerate() {
        let req = times.request_times(k);
        let theirs: Vec<usize> = req.iter().map(|t| oracle.get_frame(t + offset)).collect();
        assert_eq!(
            ours_k,
            &theirs,
            "{}: bin {k} of the chunk at {offset} s",
            path.display()
        );
        let plain: Vec<usize> = req
            .iter()
            .map(|t| ((mp_fps * (t + offset) + 0.00001) as usize).min(info.n_frames() - 1))
            .collect();
        differ += (plain != theirs) as usize;
    }
    differ
}

/// 24, 25, 29.97 and 30 fps: the plain rule holds except at the very end of the video. Clips
/// of bins ending after 4 s start with a seek (`-ss`), after 5 s with a two-part seek.
#[test]
fn constant_rates() {
    let dir = tempfile::tempdir().unwrap();
    for (name, rate, secs) in [
        ("r24.mp4", "24", 6.0),
        ("r25.mp4", "25", 4.5),
        ("r2997.mp4", "30000/1001", 6.0),
        ("r30.mp4", "30", 4.5),
    ] {
        let p = numbered_video(dir.path(), name, rate, secs, None, false);
        let d = moviepy_infos(&p).0;
        assert!(
            check(&p, 0.0, d) <= 1,
            "{name}: only the last bin may differ from the plain rule"
        );
    }
}

/// A chunk that starts inside the file (later 60 s chunks read from their offset), with an
/// audio track (two streams: the CLI's plain constant-rate sync instead of the single-stream one).
#[test]
fn chunk_offset_with_audio() {
    let dir = tempfile::tempdir().unwrap();
    let p = numbered_video(dir.path(), "a2997.mp4", "30000/1001", 7.0, None, true);
    check(&p, 2.5, 4.0);
}

/// A rate that moviepy rounds down (14.9945 fps prints as "14.99"): its seeks land a frame after
/// `int(fps * t)`, and the CLI then writes that frame twice. 59.94 fps video does the same
/// after about 10 s. The picker must follow the CLI, not the formula.
#[test]
fn rounded_down_rate() {
    let dir = tempfile::tempdir().unwrap();
    for (audio, secs) in [(false, 6.0), (true, 5.0)] {
        let p = numbered_video(
            dir.path(),
            &format!("odd{audio}.mp4"),
            "29989/2000",
            secs,
            None,
            audio,
        );
        let d = moviepy_infos(&p).0;
        assert!(check(&p, 0.0, d) >= 2, "the seek drift should show");
    }
}

/// Variable frame rate: intervals of 1, 2 and 3 ticks of 1/24 s, with and without audio.
#[test]
fn variable_rate() {
    let dir = tempfile::tempdir().unwrap();
    let e = "(N+floor(N/3)+2*floor(N/7))/24/TB";
    for (name, audio, secs) in [("vfr.mp4", false, 6.0), ("vfr_audio.mp4", true, 5.0)] {
        let p = numbered_video(dir.path(), name, "24", secs, Some(e), audio);
        let info = VideoInfo::open(&p).unwrap();
        assert!(info.is_variable_rate(), "{name} should be variable-rate");
        let d = moviepy_infos(&p).0;
        assert!(check(&p, 0.0, d) >= 3, "{name}: resampling should show");
    }
}
