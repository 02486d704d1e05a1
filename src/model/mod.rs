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

/// The logistic function.
#[inline]
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
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
        for row in out.chunks_exact_mut(self.n_up) {
            for (o, &a) in row.iter_mut().zip(&self.a) {
                *o = sigmoid(*o + a);
            }
        }
    }

    /// Down conditional (eq. 10): `P(h_{k-1,j} = 1 | h_k) = σ(Wᵀ h_k + b)_j` for a batch of `batch`
    /// rows of `up` (real values accepted). Returns `batch × n_down` probabilities.
    pub fn down_probs(&self, up: &[f32], batch: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch * self.n_down];
        gemm_ab(&mut out, up, &self.w, batch, self.n_up, self.n_down);
        for row in out.chunks_exact_mut(self.n_down) {
            for (o, &b) in row.iter_mut().zip(&self.b) {
                *o = sigmoid(*o + b);
            }
        }
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
