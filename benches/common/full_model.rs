//! The released brain model's shapes with random weights, shared by the benches that need a
//! full-size model (brain_model, run_length), and the /proc readings they report.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

pub const HIDDEN: usize = 1152;
pub const DEPTH: usize = 8;
pub const HEADS: usize = 8;
pub const LOW_RANK: usize = 2048;
pub const N_OUT: usize = 20484;
pub const N_STEPS: usize = 100;
pub const FEATURES: [(&str, usize, usize); 3] =
    [("text", 2, 3072), ("audio", 2, 1024), ("video", 2, 1408)];

/// Small deterministic generator (xorshift64*) so Rust and Python see the same file.
pub struct Rng(pub u64);
impl Rng {
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly N(0, 1) (sum of 4 uniforms, rescaled): enough for realistic magnitudes.
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * (3.0f32).sqrt()
    }
}

/// (name, shape, std) of every tensor, in state-dict order.
pub fn tensors() -> Vec<(String, Vec<usize>, f32)> {
    let h = HIDDEN;
    let proj = h / 3;
    let mut v = vec![("time_pos_embed".to_string(), vec![1, 1024, h], 0.5)];
    for (m, l, d) in FEATURES {
        v.push((
            format!("projectors.{m}.weight"),
            vec![proj, l * d],
            1.0 / ((l * d) as f32).sqrt(),
        ));
        v.push((format!("projectors.{m}.bias"), vec![proj], 0.05));
    }
    v.push((
        "low_rank_head.weight".into(),
        vec![LOW_RANK, h],
        1.0 / (h as f32).sqrt(),
    ));
    v.push((
        "predictor.weights".into(),
        vec![1, LOW_RANK, N_OUT],
        1.0 / (LOW_RANK as f32).sqrt(),
    ));
    v.push(("predictor.bias".into(), vec![1, N_OUT], 0.05));
    for i in 0..DEPTH {
        let (a, f) = (2 * i, 2 * i + 1);
        v.push((format!("encoder.layers.{a}.0.0.g"), vec![1], -1.0));
        for w in ["to_q", "to_k", "to_v", "to_out"] {
            v.push((
                format!("encoder.layers.{a}.1.{w}.weight"),
                vec![h, h],
                1.0 / (h as f32).sqrt(),
            ));
        }
        v.push((
            format!("encoder.layers.{a}.2.residual_scale"),
            vec![h],
            -1.0,
        ));
        v.push((format!("encoder.layers.{f}.0.0.g"), vec![1], -1.0));
        v.push((
            format!("encoder.layers.{f}.1.ff.0.0.weight"),
            vec![4 * h, h],
            1.0 / (h as f32).sqrt(),
        ));
        v.push((
            format!("encoder.layers.{f}.1.ff.0.0.bias"),
            vec![4 * h],
            0.05,
        ));
        v.push((
            format!("encoder.layers.{f}.1.ff.2.weight"),
            vec![h, 4 * h],
            1.0 / ((4 * h) as f32).sqrt(),
        ));
        v.push((format!("encoder.layers.{f}.1.ff.2.bias"), vec![h], 0.05));
        v.push((
            format!("encoder.layers.{f}.2.residual_scale"),
            vec![h],
            -1.0,
        ));
    }
    v.push(("encoder.rotary_pos_emb.inv_freq".into(), vec![36], -2.0));
    v.push(("encoder.final_norm.g".into(), vec![1], -1.0));
    v
}

/// Stream a random full-size model.safetensors into `dir` (one tensor in memory at a time).
pub fn write_weights(dir: &Path) -> u64 {
    let specs = tensors();
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape, _) in &specs {
        let n: usize = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let dims: serde_json::Map<String, serde_json::Value> = FEATURES
        .iter()
        .map(|(m, l, d)| (m.to_string(), serde_json::json!([l, d])))
        .collect();
    let args = serde_json::json!({"feature_dims": dims, "n_outputs": N_OUT, "n_output_timesteps": N_STEPS});
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"model_build_args": args.to_string()}),
    );
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !(h.len() + 8).is_multiple_of(8) {
        h.push(b' ');
    }
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(dir.join("model.safetensors")).unwrap());
    w.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&h).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (_, shape, std) in &specs {
        let n: usize = shape.iter().product();
        for j in 0..n {
            let x = match *std {
                // ScaleNorm gains and residual scales: around 1.
                -1.0 => 1.0 + 0.1 * rng.normal(),
                // The rotary buffer: 1 / 10000^(2j/72).
                -2.0 => 1.0 / 10000f32.powf(2.0 * j as f32 / 72.0),
                s => s * rng.normal(),
            };
            w.write_all(&x.to_le_bytes()).unwrap();
        }
    }
    w.flush().unwrap();
    off as u64
}

/// The release-shaped config: the fixture's config.yaml with the released sizes. The fixture is
/// looked up in the source tree, else under the working directory: a bench binary copied to
/// another machine (scripts/gpu-check.sh) runs from a checkout at another path.
pub fn write_config(dir: &Path) {
    let rel = "tests/fixtures/models-tiny/tribev2/config.yaml";
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let src = if built.is_file() {
        built
    } else {
        Path::new(rel).to_path_buf()
    };
    let text = std::fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("{}: {e} (run from the repository root)", src.display()));
    let text = text
        .replace("    hidden: 192\n", &format!("    hidden: {HIDDEN}\n"))
        .replace(
            "    low_rank_head: 32\n",
            &format!("    low_rank_head: {LOW_RANK}\n"),
        )
        .replace("        heads: 2\n", &format!("        heads: {HEADS}\n"))
        .replace("        depth: 2\n", &format!("        depth: {DEPTH}\n"));
    assert!(
        text.contains("hidden: 1152")
            && text.contains("depth: 8")
            && text.contains("duration_trs: 100")
    );
    std::fs::write(dir.join("config.yaml"), text).unwrap();
}

/// CPU seconds used by all of this process's threads so far (nanosecond run times from
/// /proc/self/task/*/schedstat). On a loaded machine wall-clock time measures the neighbours;
/// CPU time measures our own work.
pub fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

pub fn rss_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Reset VmHWM (peak RSS) so that writing the weights does not count.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
