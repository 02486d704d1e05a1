//! The model: one binary RBM `t_k(h_k, h_{k-1})` (SPEC §0, seed eq. 1) and the deep stack of N of them.

pub mod io;

use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};
use crate::linalg::{gemm_ab, gemm_abt};
use crate::util::{fnv1a64, fnv1a64_f32};

/// One RBM joining the lower layer `h_{k-1}` (width `n_down`) and the upper layer `h_k` (width `n_up`):
/// `t_k(h_k, h_{k-1}) ∝ exp(h_kᵀ W h_{k-1} + aᵀ h_k + bᵀ h_{k-1})` (seed eq. 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Rbm {
    /// Width of the upper layer, `n_k`.
    pub n_up: usize,
    /// Width of the lower layer, `n_{k-1}`.
    pub n_down: usize,
    /// `W_k`, row-major `n_up × n_down`.
    pub w: Vec<f32>,
    /// Upper-layer bias `a_k` (length `n_up`).
    pub a: Vec<f32>,
    /// Lower-layer bias `b_k` (length `n_down`).
    pub b: Vec<f32>,
}

/// The logistic function `σ(z) = 1/(1 + e^{-z})` in f32.
///
/// From `t = e^{-|z|}` (so nothing overflows): `σ = 1/(1+t)` for z ≥ 0, `t/(1+t)` below. The
/// exponential is Cephes' `expf` (range reduction by ln 2 in two parts, degree-6 polynomial,
/// scaling by 2ⁿ through the exponent bits) written without branches or calls, so the row loops
/// of [`Rbm::up_probs`] and [`Rbm::down_probs`] vectorise; libm's `expf` call per unit cost more
/// than a 64-wide layer's dot products (`docs/performance.md`). Error against the f64 logistic
/// ≤ 2.4e-7 absolute and 1e-6 relative for z ≥ −87 (tested over ±100); below, the result is
/// clamped to e^{−87} ≈ 1.6e-38 (σ(−∞) included); NaN stays NaN.
#[inline(always)]
pub fn sigmoid(z: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer (|x·log2 e| < 2²²).
    const ROUND: f32 = 12_582_912.0;
    let x = -z.abs();
    // e^-87 is the smallest result kept in the normal range; NaN fails the test and stays NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let k = x * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let poly = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = poly * (r * r) + r + 1.0;
    // n ∈ [−126, 0] sits in the low mantissa bits of k = 1.5·2²³ + n (bits 0x4B40_0000 + n), so
    // 2ⁿ is built from integer operations alone (no float→int conversion, whose saturating
    // semantics would be checked lane by lane); for NaN the bits are garbage but e is NaN.
    let two_n = f32::from_bits(
        k.to_bits()
            .wrapping_sub(0x4B40_0000)
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    let t = e * two_n;
    let s = 1.0 / (1.0 + t);
    if z >= 0.0 {
        s
    } else {
        t * s
    }
}

/// `out[r, j] ← σ(out[r, j] + bias[j])` for every row r of the row-major `out` (rows of
/// `bias.len()`): the activation step of the up and down conditionals. The same [`sigmoid`]
/// everywhere; on x86-64 with AVX-512 (or AVX2) the loop is compiled for those registers and
/// chosen at run time. No fused multiply-adds are formed, so every path gives identical bits.
pub fn sigmoid_rows(out: &mut [f32], bias: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { sigmoid_rows_avx512(out, bias) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { sigmoid_rows_avx2(out, bias) };
        }
    }
    sigmoid_rows_portable(out, bias);
}

#[inline(always)]
fn sigmoid_rows_portable(out: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in out.chunks_exact_mut(bias.len()) {
        for (o, &a) in row.iter_mut().zip(bias) {
            *o = sigmoid(*o + a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sigmoid_rows_avx512(out: &mut [f32], bias: &[f32]) {
    sigmoid_rows_portable(out, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sigmoid_rows_avx2(out: &mut [f32], bias: &[f32]) {
    sigmoid_rows_portable(out, bias);
}

impl Rbm {
    /// All-zero RBM.
    pub fn zeros(n_down: usize, n_up: usize) -> Self {
        Rbm {
            n_up,
            n_down,
            w: vec![0.0; n_up * n_down],
            a: vec![0.0; n_up],
            b: vec![0.0; n_down],
        }
    }

    /// Gaussian weights of standard deviation `scale`, zero biases.
    pub fn random(n_down: usize, n_up: usize, scale: f32, rng: &mut Xoshiro256PlusPlus) -> Self {
        let mut r = Rbm::zeros(n_down, n_up);
        for w in &mut r.w {
            *w = scale * standard_normal(rng);
        }
        r
    }

    /// Up conditional (eq. 3): `P(h_k,i = 1 | h_{k-1}) = σ(W h_{k-1} + a)_i` for a batch of `batch`
    /// rows of `down` (real values accepted). Returns `batch × n_up` probabilities.
    pub fn up_probs(&self, down: &[f32], batch: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch * self.n_up];
        self.up_probs_into(down, batch, &mut out);
        out
    }

    /// [`Rbm::up_probs`] into a caller buffer.
    pub fn up_probs_into(&self, down: &[f32], batch: usize, out: &mut [f32]) {
        gemm_abt(out, down, &self.w, batch, self.n_down, self.n_up);
        sigmoid_rows(out, &self.a);
    }

    /// Down conditional (eq. 10): `P(h_{k-1,j} = 1 | h_k) = σ(Wᵀ h_k + b)_j` for a batch of `batch`
    /// rows of `up` (real values accepted). Returns `batch × n_down` probabilities.
    pub fn down_probs(&self, up: &[f32], batch: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch * self.n_down];
        gemm_ab(&mut out, up, &self.w, batch, self.n_up, self.n_down);
        sigmoid_rows(&mut out, &self.b);
        out
    }

    /// Check internal consistency (lengths) and finiteness; `what` names the layer in messages.
    pub fn validate(&self, what: &str) -> std::result::Result<(), String> {
        if self.n_up == 0 || self.n_down == 0 {
            return Err(format!(
                "{what}: zero width ({}×{})",
                self.n_up, self.n_down
            ));
        }
        if self.w.len() != self.n_up * self.n_down {
            return Err(format!(
                "{what}.W has {} values, expected {}×{}",
                self.w.len(),
                self.n_up,
                self.n_down
            ));
        }
        if self.a.len() != self.n_up {
            return Err(format!(
                "{what}.a has length {}, expected {}",
                self.a.len(),
                self.n_up
            ));
        }
        if self.b.len() != self.n_down {
            return Err(format!(
                "{what}.b has length {}, expected {}",
                self.b.len(),
                self.n_down
            ));
        }
        for (name, v) in [("W", &self.w), ("a", &self.a), ("b", &self.b)] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(format!("{what}.{name}[{i}] is not finite ({})", v[i]));
            }
        }
        Ok(())
    }
}

/// A standard normal deviate (Box–Muller; one of the pair is discarded for simplicity).
pub fn standard_normal(rng: &mut Xoshiro256PlusPlus) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A deep stack of N RBMs, widths `n_0 … n_N`: layer 0 is the input x, layer N the output y.
/// `layers[k-1]` is the paper's RBM k.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepRbm {
    pub layers: Vec<Rbm>,
}

impl DeepRbm {
    /// Build from RBMs, checking that consecutive widths agree and every value is finite.
    pub fn new(layers: Vec<Rbm>) -> Result<Self> {
        let m = DeepRbm { layers };
        m.validate().map_err(Error::shape)?;
        Ok(m)
    }

    /// Random stack for the given widths `n_0 … n_N` (Gaussian weights of std `scale`).
    pub fn random(widths: &[usize], scale: f32, rng: &mut Xoshiro256PlusPlus) -> Result<Self> {
        check_widths(widths)?;
        DeepRbm::new(
            widths
                .windows(2)
                .map(|w| Rbm::random(w[0], w[1], scale, rng))
                .collect(),
        )
    }

    /// Number of RBMs, N.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Widths `n_0 … n_N`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.layers[0].n_down];
        w.extend(self.layers.iter().map(|l| l.n_up));
        w
    }

    pub fn n_inputs(&self) -> usize {
        self.layers[0].n_down
    }

    pub fn n_outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].n_up
    }

    /// RBM k of the paper (1-based).
    pub fn rbm(&self, k: usize) -> &Rbm {
        &self.layers[k - 1]
    }

    /// Consistency of widths and values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.layers.is_empty() {
            return Err("a deep RBM needs at least one layer".into());
        }
        for (i, l) in self.layers.iter().enumerate() {
            l.validate(&format!("rbm{}", i + 1))?;
        }
        for (i, p) in self.layers.windows(2).enumerate() {
            if p[0].n_up != p[1].n_down {
                return Err(format!(
                    "rbm{} has upper width {} but rbm{} has lower width {}",
                    i + 1,
                    p[0].n_up,
                    i + 2,
                    p[1].n_down
                ));
            }
        }
        Ok(())
    }

    /// A 64-bit fingerprint of all weights, used to seed the served-output sampler (SPEC §1) so the
    /// same (model, input, seed) always gives the same answer.
    pub fn fingerprint(&self) -> u64 {
        let mut h = fnv1a64(b"rgshield-deep-rbm");
        for l in &self.layers {
            h = fnv1a64_f32(h, &[l.n_up as f32, l.n_down as f32]);
            h = fnv1a64_f32(h, &l.w);
            h = fnv1a64_f32(h, &l.a);
            h = fnv1a64_f32(h, &l.b);
        }
        h
    }
}

/// Widths must have at least two entries, all positive.
pub fn check_widths(widths: &[usize]) -> Result<()> {
    if widths.len() < 2 {
        return Err(Error::invalid(format!(
            "widths {widths:?}: need at least two (input and output)"
        )));
    }
    if let Some(i) = widths.iter().position(|&w| w == 0) {
        return Err(Error::invalid(format!(
            "widths {widths:?}: entry {i} is zero"
        )));
    }
    Ok(())
}

/// Parse a comma-separated width list such as `64,64,10`.
pub fn parse_widths(s: &str) -> Result<Vec<usize>> {
    let widths = s
        .split(',')
        .map(|t| {
            t.trim().parse::<usize>().map_err(|_| {
                Error::invalid(format!("--widths '{s}': '{t}' is not a positive integer"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_widths(&widths)?;
    Ok(widths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn conditionals_match_definitions() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let r = Rbm::random(4, 3, 1.0, &mut rng);
        let mut r = r;
        r.a = vec![0.1, -0.2, 0.3];
        r.b = vec![0.5, 0.0, -0.5, 1.0];
        let h = [1.0, 0.0, 0.5, 1.0];
        let p = r.up_probs(&h, 1);
        for i in 0..3 {
            let z: f32 = (0..4).map(|j| r.w[i * 4 + j] * h[j]).sum::<f32>() + r.a[i];
            assert!((p[i] - sigmoid(z)).abs() < 1e-6);
        }
        let u = [0.0, 1.0, 1.0];
        let q = r.down_probs(&u, 1);
        for j in 0..4 {
            let z: f32 = (0..3).map(|i| r.w[i * 4 + j] * u[i]).sum::<f32>() + r.b[j];
            assert!((q[j] - sigmoid(z)).abs() < 1e-6);
        }
    }

    #[test]
    fn sigmoid_matches_the_f64_logistic() {
        let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
        for i in -2_000_000..=2_000_000 {
            let z = i as f32 * 5e-5;
            let exact = 1.0 / (1.0 + (-(z as f64)).exp());
            let got = sigmoid(z) as f64;
            max_abs = max_abs.max((got - exact).abs());
            if z >= -87.0 {
                max_rel = max_rel.max((got - exact).abs() / exact);
            } else {
                // Clamped: e^-87 ≈ 1.6e-38 instead of a smaller value.
                assert!(got > 0.0 && got <= 1.7e-38, "{z} {got:e}");
            }
        }
        assert!(
            max_abs <= 2.4e-7 && max_rel <= 1e-6,
            "{max_abs:e} {max_rel:e}"
        );
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!(sigmoid(-200.0) > 0.0 && sigmoid(-200.0) < 2e-38);
        assert!(sigmoid(f32::NAN).is_nan());
        // Monotone on a fine grid.
        let mut prev = 0.0f32;
        for i in -10_000..=10_000 {
            let s = sigmoid(i as f32 * 1e-3);
            assert!(s >= prev, "{i}");
            prev = s;
        }
    }

    #[test]
    fn sigmoid_rows_gives_the_scalar_bits_on_every_path() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let bias: Vec<f32> = (0..37).map(|_| 3.0 * standard_normal(&mut rng)).collect();
        let z: Vec<f32> = (0..37 * 11)
            .map(|_| 30.0 * standard_normal(&mut rng))
            .collect();
        let expect: Vec<u32> = z
            .iter()
            .enumerate()
            .map(|(i, &v)| sigmoid(v + bias[i % 37]).to_bits())
            .collect();
        let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
        let mut a = z.clone();
        sigmoid_rows(&mut a, &bias);
        assert_eq!(bits(&a), expect);
        let mut b = z.clone();
        sigmoid_rows_portable(&mut b, &bias);
        assert_eq!(bits(&b), expect);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut c = z.clone();
                // SAFETY: AVX2 checked just above.
                unsafe { sigmoid_rows_avx2(&mut c, &bias) };
                assert_eq!(bits(&c), expect);
            }
        }
    }

    #[test]
    fn widths_are_checked() {
        assert!(parse_widths("64,64,10").is_ok());
        let e = parse_widths("64,x,10").unwrap_err().to_string();
        assert!(e.contains("'x'"), "{e}");
        assert!(parse_widths("64").is_err());
        assert!(parse_widths("64,0,10").is_err());
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut m = DeepRbm::random(&[4, 3, 2], 1.0, &mut rng).unwrap();
        assert_eq!(m.widths(), vec![4, 3, 2]);
        m.layers[1].w[0] = f32::NAN;
        let e = m.validate().unwrap_err();
        assert!(e.contains("rbm2.W[0]"), "{e}");
    }
}
