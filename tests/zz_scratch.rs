use candle_core::{DType, Device, Tensor};
use std::time::Instant;
use tribe_bids::features::matmul::matmul_nt;
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
#[test]
fn parts() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (512, 3072), &dev).unwrap();
    let mut tot = 0.0;
    let mut totc = 0.0;
    for (n, k) in [
        (5120usize, 3072usize),
        (3072, 3072),
        (16384, 3072),
        (3072, 8192),
    ] {
        let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        let xi = if k == 3072 {
            x.clone()
        } else {
            Tensor::randn(0f32, 1., (512, k), &dev).unwrap()
        };
        let (t, c) = (Instant::now(), cpu());
        let _ = matmul_nt(&xi, &w).unwrap();
        let (wall, cp) = (t.elapsed().as_secs_f64(), cpu() - c);
        tot += wall;
        totc += cp;
        println!(
            "{n}x{k}: {:.3} s wall, {:.2} cpu-s, {:.1} GFLOP/s",
            wall,
            cp,
            2.0 * (512 * n * k) as f64 / wall / 1e9
        );
    }
    println!("linear total per layer: {tot:.3} s wall {totc:.2} cpu");
    let _ = DType::F32;
}
