//! The samplers' random generator: eight independent xoshiro256++ generators, one in each 64-bit
//! lane of a 512-bit vector, stepped together.
//!
//! A unit update of a 64-wide layer is 64 multiply-adds, which the GEMM does in well under a
//! nanosecond; one scalar xoshiro256++ step per two Bernoulli draws (a serial dependency chain)
//! cost more than that (`docs/performance.md`, section 9). Stepping eight generators at once
//! turns one step into about ten vector instructions for 16 draws, with no dependency between the
//! lanes (0.25 ns per draw against 1.0 ns for the scalar stream, measured with the conversion).
//!
//! **Streams.** [`LaneRng::seed_from_u64`] fills the 32 state words (lane-major: lane 0's four
//! words first) with consecutive outputs of SplitMix64 started at the seed — the seeding that
//! xoshiro's authors recommend, applied to eight generators; overlaps between the lanes' streams
//! (period 2²⁵⁶ − 1 each) are vanishingly unlikely.
//!
//! **Bernoulli draws.** [`LaneRng::fill_bernoulli`] consumes one step (eight 64-bit outputs) per 16
//! draws: draw `16b + 2j` compares bits 8–31 of lane j's output, draw `16b + 2j + 1` bits 40–63,
//! each read as a 24-bit uniform `u ∈ [0, 1)`, and sets 1 when `u < p`. A call that ends inside a
//! block of 16 discards the rest of that step, so the stream a call consumes depends only on its
//! length. The comparisons are exact, so the AVX-512, AVX2 and portable paths (chosen at run time)
//! give identical results.
//!
//! As a [`rand::Rng`] (for the odd scalar draw, e.g. a class index), `next_u64` hands out the eight
//! outputs of a step in lane order before stepping again.

use std::convert::Infallible;

use rand::{SeedableRng, TryRng};

/// Generators stepped together, one per 64-bit lane of a 512-bit vector.
pub const LANES: usize = 8;

/// Bernoulli draws per step: two 24-bit uniforms from each lane's 64-bit output.
pub const DRAWS_PER_STEP: usize = 2 * LANES;

/// Eight xoshiro256++ generators in vector lanes (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneRng {
    /// `s[i][l]`: state word i of lane l.
    s: [[u64; LANES]; 4],
    /// The outputs of the last scalar step; `buf[used..]` are not handed out yet.
    buf: [u64; LANES],
    used: usize,
}

/// One SplitMix64 output (Steele, Lea and Flood; the seeding generator of xoshiro).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One xoshiro256++ step of every lane (Blackman and Vigna), returning the eight outputs.
#[inline(always)]
fn step(s: &mut [[u64; LANES]; 4]) -> [u64; LANES] {
    let [s0, s1, s2, s3] = s;
    let mut out = [0u64; LANES];
    for l in 0..LANES {
        out[l] = s0[l]
            .wrapping_add(s3[l])
            .rotate_left(23)
            .wrapping_add(s0[l]);
        let t = s1[l] << 17;
        s2[l] ^= s0[l];
        s3[l] ^= s1[l];
        s1[l] ^= s2[l];
        s0[l] ^= s3[l];
        s2[l] ^= t;
        s3[l] = s3[l].rotate_left(45);
    }
    out
}

/// 2⁻²⁴: a 24-bit integer times this is a uniform in [0, 1), exactly representable in f32.
const SCALE: f32 = 1.0 / (1u32 << 24) as f32;

/// The eight outputs as 16 32-bit words: word 2j is the low half of lane j, word 2j+1 the high half.
#[inline(always)]
fn halves(x: [u64; LANES]) -> [u32; DRAWS_PER_STEP] {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: same size, and every bit pattern is a valid u32; on a little-endian machine
        // word 2j is the low half of lane j — a reinterpretation of the vector, no shuffle.
        unsafe { std::mem::transmute::<[u64; LANES], [u32; DRAWS_PER_STEP]>(x) }
    }
    #[cfg(target_endian = "big")]
    {
        std::array::from_fn(|i| (x[i / 2] >> (32 * (i % 2))) as u32)
    }
}

/// The 16 uniforms of one step: element 2j from bits 8–31 of lane j, element 2j+1 from bits 40–63
/// (the top 24 bits of each half).
#[inline(always)]
fn uniforms(x: [u64; LANES]) -> [f32; DRAWS_PER_STEP] {
    let w = halves(x);
    // Values below 2^24 convert exactly, through the signed conversion every SIMD set has.
    std::array::from_fn(|i| ((w[i] >> 8) as i32) as f32 * SCALE)
}

#[inline(always)]
fn fill_portable(s: &mut [[u64; LANES]; 4], probs: &[f32], out: &mut [f32]) {
    // A local copy of the state stays in registers across the loop.
    let mut st = *s;
    let mut pc = probs.chunks_exact(DRAWS_PER_STEP);
    let mut oc = out.chunks_exact_mut(DRAWS_PER_STEP);
    for (p, o) in (&mut pc).zip(&mut oc) {
        let u = uniforms(step(&mut st));
        for i in 0..DRAWS_PER_STEP {
            o[i] = if u[i] < p[i] { 1.0 } else { 0.0 };
        }
    }
    let (p, o) = (pc.remainder(), oc.into_remainder());
    if !p.is_empty() {
        let u = uniforms(step(&mut st));
        for ((o, &p), &u) in o.iter_mut().zip(p).zip(&u) {
            *o = if u < p { 1.0 } else { 0.0 };
        }
    }
    *s = st;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fill_avx512(s: &mut [[u64; LANES]; 4], probs: &[f32], out: &mut [f32]) {
    fill_portable(s, probs, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_avx2(s: &mut [[u64; LANES]; 4], probs: &[f32], out: &mut [f32]) {
    fill_portable(s, probs, out);
}

impl LaneRng {
    /// Independent Bernoulli(p) draws in {0, 1} into `out` (the same length as `probs`), 16 per
    /// step of the eight generators (module docs). `p ≤ 0` always gives 0 and `p ≥ 1` always 1.
    pub fn fill_bernoulli(&mut self, probs: &[f32], out: &mut [f32]) {
        assert_eq!(
            probs.len(),
            out.len(),
            "Bernoulli draws: {} probabilities for {} outputs",
            probs.len(),
            out.len()
        );
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { fill_avx512(&mut self.s, probs, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { fill_avx2(&mut self.s, probs, out) };
            }
        }
        fill_portable(&mut self.s, probs, out);
    }

    /// One step of every lane: the eight 64-bit outputs, lane 0 first.
    pub fn step(&mut self) -> [u64; LANES] {
        step(&mut self.s)
    }
}

impl SeedableRng for LaneRng {
    type Seed = [u8; 32];

    /// From 256 bits: state word i of lane l is the l-th SplitMix64 output started at the seed's
    /// i-th little-endian 64-bit word, so every lane depends on the whole seed.
    fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [[0u64; LANES]; 4];
        for (i, row) in s.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&seed[8 * i..8 * i + 8]);
            let mut st = u64::from_le_bytes(w);
            for v in row.iter_mut() {
                *v = splitmix64(&mut st);
            }
        }
        LaneRng {
            s,
            buf: [0; LANES],
            used: LANES,
        }
    }

    /// The 32 state words, lane 0's four first, are consecutive SplitMix64 outputs started at
    /// `state` (module docs).
    fn seed_from_u64(mut state: u64) -> Self {
        let mut s = [[0u64; LANES]; 4];
        for l in 0..LANES {
            for row in s.iter_mut() {
                row[l] = splitmix64(&mut state);
            }
        }
        LaneRng {
            s,
            buf: [0; LANES],
            used: LANES,
        }
    }
}

impl TryRng for LaneRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        if self.used == LANES {
            self.buf = step(&mut self.s);
            self.used = 0;
        }
        let v = self.buf[self.used];
        self.used += 1;
        Ok(v)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::rand_core::utils::fill_bytes_via_next_word(dst, || self.try_next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The lane with state words `w` stepped as the reference scalar xoshiro256++.
    fn scalar(w: [u64; 4]) -> Xoshiro256PlusPlus {
        let mut seed = [0u8; 32];
        for (i, v) in w.iter().enumerate() {
            seed[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        Xoshiro256PlusPlus::from_seed(seed)
    }

    #[test]
    fn every_lane_is_the_reference_xoshiro256plusplus() {
        let mut r = LaneRng::seed_from_u64(42);
        let mut refs: Vec<Xoshiro256PlusPlus> = (0..LANES)
            .map(|l| scalar([r.s[0][l], r.s[1][l], r.s[2][l], r.s[3][l]]))
            .collect();
        for _ in 0..100 {
            let x = r.step();
            for l in 0..LANES {
                assert_eq!(x[l], refs[l].next_u64(), "lane {l}");
            }
        }
        // Seeding: consecutive SplitMix64 outputs, lane-major; lanes differ.
        let mut st = 42u64;
        let r = LaneRng::seed_from_u64(42);
        assert_eq!(r.s[0][0], splitmix64(&mut st));
        assert_eq!(r.s[1][0], splitmix64(&mut st));
        assert_ne!(r.s[0][0], r.s[0][1]);
    }

    #[test]
    fn bernoulli_uses_the_documented_bits_on_every_path() {
        let probs: Vec<f32> = (0..16 * 7 + 5).map(|i| (i % 23) as f32 / 22.0).collect();
        let mut a = LaneRng::seed_from_u64(7);
        let mut out = vec![0.0f32; probs.len()];
        a.fill_bernoulli(&probs, &mut out);
        // By hand from the documented bit layout.
        let mut b = LaneRng::seed_from_u64(7);
        let mut want = Vec::new();
        for blk in probs.chunks(DRAWS_PER_STEP) {
            let x = b.step();
            for (i, &p) in blk.iter().enumerate() {
                let (j, hi) = (i / 2, i % 2 == 1);
                let bits = if hi {
                    x[j] >> 40
                } else {
                    (x[j] >> 8) & 0xFF_FFFF
                };
                let u = bits as f64 / (1u64 << 24) as f64;
                want.push(if u < p as f64 { 1.0f32 } else { 0.0 });
            }
        }
        assert_eq!(out, want);
        // The state advanced by exactly ⌈len/16⌉ steps.
        assert_eq!(a, b);
        // Every instruction-set path gives the same draws.
        let mut c = LaneRng::seed_from_u64(7);
        let mut o2 = vec![0.0f32; probs.len()];
        fill_portable(&mut c.s, &probs, &mut o2);
        assert_eq!(o2, want);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut d = LaneRng::seed_from_u64(7);
                let mut o3 = vec![0.0f32; probs.len()];
                // SAFETY: AVX2 checked just above.
                unsafe { fill_avx2(&mut d.s, &probs, &mut o3) };
                assert_eq!(o3, want);
            }
        }
        // Edges are exact: p = 0 never fires, p = 1 always.
        let mut e = LaneRng::seed_from_u64(1);
        let edges: Vec<f32> = (0..1000).map(|i| (i % 2) as f32).collect();
        let mut o = vec![0.5f32; 1000];
        e.fill_bernoulli(&edges, &mut o);
        assert_eq!(o, edges);
    }

    #[test]
    fn draws_have_the_right_frequencies_and_no_neighbour_correlation() {
        // 2^20 draws, position i of every block of 16 with p_i = (i + 1)/17: each position's
        // frequency within 4 binomial standard errors, and the correlation of neighbours (the two
        // halves of one lane's output, and the same half of adjacent lanes) within 4/√n of 0.
        let blocks = 1 << 16;
        let probs: Vec<f32> = (0..blocks * DRAWS_PER_STEP)
            .map(|k| ((k % DRAWS_PER_STEP) + 1) as f32 / 17.0)
            .collect();
        let mut out = vec![0.0f32; probs.len()];
        let mut r = LaneRng::seed_from_u64(2024);
        // Half of it in uneven calls, so that partial blocks (and the draws they discard) are
        // exercised too.
        let half = probs.len() / 2;
        r.fill_bernoulli(&probs[..half], &mut out[..half]);
        let mut at = half;
        for len in [5usize, 16, 1000, 33].iter().cycle() {
            let end = (at + len).min(probs.len());
            r.fill_bernoulli(&probs[at..end], &mut out[at..end]);
            at = end;
            if at == probs.len() {
                break;
            }
        }
        for i in 0..DRAWS_PER_STEP {
            let p = (i + 1) as f64 / 17.0;
            let ones: f64 = (0..blocks)
                .map(|b| out[b * DRAWS_PER_STEP + i] as f64)
                .sum();
            let se = (p * (1.0 - p) / blocks as f64).sqrt();
            let z = (ones / blocks as f64 - p) / se;
            assert!(z.abs() < 4.0, "position {i}: z = {z}");
        }
        let corr = |a: usize, b: usize| {
            let pa = (a + 1) as f64 / 17.0;
            let pb = (b + 1) as f64 / 17.0;
            let c: f64 = (0..blocks)
                .map(|k| {
                    (out[k * DRAWS_PER_STEP + a] as f64 - pa)
                        * (out[k * DRAWS_PER_STEP + b] as f64 - pb)
                })
                .sum::<f64>()
                / blocks as f64;
            c / (pa * (1.0 - pa) * pb * (1.0 - pb)).sqrt()
        };
        let bound = 4.0 / (blocks as f64).sqrt();
        for (a, b) in [(0, 1), (6, 7), (0, 2), (5, 7), (14, 15)] {
            let c = corr(a, b);
            assert!(c.abs() < bound, "positions {a}, {b}: correlation {c}");
        }
    }

    #[test]
    fn scalar_draws_hand_out_each_step_in_lane_order() {
        let mut a = LaneRng::seed_from_u64(3);
        let mut b = a.clone();
        let x = b.step();
        let y = b.step();
        let got: Vec<u64> = (0..2 * LANES).map(|_| a.next_u64()).collect();
        assert_eq!(&got[..LANES], &x);
        assert_eq!(&got[LANES..], &y);
        let mut bytes = [0u8; 12];
        LaneRng::seed_from_u64(3).fill_bytes(&mut bytes);
        assert_eq!(&bytes[..8], &x[0].to_le_bytes());
        assert_eq!(&bytes[8..], &x[1].to_le_bytes()[..4]);
        // from_seed depends on every seed word.
        let s1 = LaneRng::from_seed([0; 32]);
        let mut seed = [0u8; 32];
        seed[31] = 1;
        assert_ne!(s1, LaneRng::from_seed(seed));
    }
}
