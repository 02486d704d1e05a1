//! The model: one binary RBM `t_k(h_k, h_{k-1})` (SPEC §0, paper eq. 1) and the deep stack of N of
//! them; the logistic function ([`sigmoid`]) and the f64 conditionals ([`kernels`]) they use; and
//! the softmax MLP ([`mlp`]) that stands for a thief's generic learner.

pub mod io;
pub mod kernels;
pub mod mlp;
pub mod sigmoid;

pub use sigmoid::{sigmoid, sigmoid_rows};

use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};
use crate::linalg::{gemm_ab, gemm_abt};
use crate::util::{fnv1a64, fnv1a64_f32};

/// One RBM joining the lower layer `h_{k-1}` (width `n_down`) and the upper layer `h_k` (width `n_up`):
/// `t_k(h_k, h_{k-1}) ∝ exp(h_kᵀ W h_{k-1} + aᵀ h_k + bᵀ h_{k-1})` (paper eq. 1).
///
/// Invariant: the lengths agree with the widths (both ≥ 1) and every value is finite. Built only
/// through [`Rbm::new`] (checked), [`Rbm::zeros`] and [`Rbm::random`]; training updates the fields
/// inside the crate and checks them again.
#[derive(Clone, Debug, PartialEq)]
pub struct Rbm {
    /// Width of the upper layer, `n_k`.
    pub(crate) n_up: usize,
    /// Width of the lower layer, `n_{k-1}`.
    pub(crate) n_down: usize,
    /// `W_k`, row-major `n_up × n_down`.
    pub(crate) w: Vec<f32>,
    /// Upper-layer bias `a_k` (length `n_up`).
    pub(crate) a: Vec<f32>,
    /// Lower-layer bias `b_k` (length `n_down`).
    pub(crate) b: Vec<f32>,
}

/// The parameters of one RBM as plain data, for building or editing a model from outside the
/// crate ([`Rbm::new`], [`Rbm::to_parts`], [`DeepRbm::edited`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RbmParts {
    /// Width of the lower layer, `n_{k-1}`.
    pub n_down: usize,
    /// Width of the upper layer, `n_k`.
    pub n_up: usize,
    /// `W_k`, row-major `n_up × n_down`.
    pub w: Vec<f32>,
    /// Upper-layer bias `a_k`.
    pub a: Vec<f32>,
    /// Lower-layer bias `b_k`.
    pub b: Vec<f32>,
}

impl Rbm {
    /// An RBM from its parameters, checked (lengths, widths ≥ 1, finite values); the error names
    /// the tensor and index.
    pub fn new(parts: RbmParts) -> Result<Self> {
        let r = Rbm::from_parts_unchecked(parts);
        r.validate("rbm")?;
        Ok(r)
    }

    fn from_parts_unchecked(parts: RbmParts) -> Self {
        Rbm {
            n_up: parts.n_up,
            n_down: parts.n_down,
            w: parts.w,
            a: parts.a,
            b: parts.b,
        }
    }

    /// A copy of the parameters as plain data.
    pub fn to_parts(&self) -> RbmParts {
        RbmParts {
            n_down: self.n_down,
            n_up: self.n_up,
            w: self.w.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
        }
    }

    /// All-zero RBM. Refuses (instead of aborting the process) a size whose parameter count
    /// overflows or whose memory cannot be allocated.
    pub fn zeros(n_down: usize, n_up: usize) -> Result<Self> {
        let n = n_up
            .checked_mul(n_down)
            .filter(|&n| n.checked_mul(std::mem::size_of::<f32>()).is_some())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "an RBM of widths {n_down}×{n_up} has too many weights to address"
                ))
            })?;
        Ok(Rbm {
            n_up,
            n_down,
            w: zeroed(n, n_down, n_up)?,
            a: zeroed(n_up, n_down, n_up)?,
            b: zeroed(n_down, n_down, n_up)?,
        })
    }

    /// Gaussian weights of standard deviation `scale`, zero biases; refuses what
    /// [`Rbm::zeros`] refuses.
    pub fn random(
        n_down: usize,
        n_up: usize,
        scale: f32,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<Self> {
        let mut r = Rbm::zeros(n_down, n_up)?;
        for w in &mut r.w {
            *w = scale * standard_normal(rng);
        }
        Ok(r)
    }

    /// Width of the upper layer, `n_k`.
    pub fn n_up(&self) -> usize {
        self.n_up
    }

    /// Width of the lower layer, `n_{k-1}`.
    pub fn n_down(&self) -> usize {
        self.n_down
    }

    /// `W_k`, row-major `n_up × n_down`.
    pub fn w(&self) -> &[f32] {
        &self.w
    }

    /// Upper-layer bias `a_k`.
    pub fn a(&self) -> &[f32] {
        &self.a
    }

    /// Lower-layer bias `b_k`.
    pub fn b(&self) -> &[f32] {
        &self.b
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
    pub(crate) fn validate(&self, what: &str) -> Result<()> {
        let bad = |m: String| Err(Error::shape(m));
        if self.n_up == 0 || self.n_down == 0 {
            return bad(format!(
                "{what}: zero width ({}×{})",
                self.n_up, self.n_down
            ));
        }
        if self.w.len() != self.n_up * self.n_down {
            return bad(format!(
                "{what}.W has {} values, expected {}×{}",
                self.w.len(),
                self.n_up,
                self.n_down
            ));
        }
        if self.a.len() != self.n_up {
            return bad(format!(
                "{what}.a has length {}, expected {}",
                self.a.len(),
                self.n_up
            ));
        }
        if self.b.len() != self.n_down {
            return bad(format!(
                "{what}.b has length {}, expected {}",
                self.b.len(),
                self.n_down
            ));
        }
        for (name, v) in [("W", &self.w), ("a", &self.a), ("b", &self.b)] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "{what}.{name}[{i}] is not finite ({})",
                    v[i]
                )));
            }
        }
        Ok(())
    }
}

/// `n` zeros, or an error when the memory cannot be allocated (instead of an abort).
fn zeroed(n: usize, n_down: usize, n_up: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| {
        Error::invalid(format!(
            "an RBM of widths {n_down}×{n_up}: cannot allocate {} for {n} values ({e})",
            crate::util::memory::format_bytes((n as u64).saturating_mul(4))
        ))
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Bytes of the parameters (f32 `W`, `a`, `b` of every RBM) of a stack of `widths`, or `None`
/// when the count overflows: the size of one copy of the model in memory and, nearly, of its
/// `model.safetensors`.
pub fn estimated_bytes(widths: &[usize]) -> Option<u64> {
    widths.windows(2).try_fold(0u64, |acc, w| {
        let (d, u) = (w[0] as u64, w[1] as u64);
        d.checked_mul(u)?
            .checked_add(d)?
            .checked_add(u)?
            .checked_mul(4)?
            .checked_add(acc)
    })
}

/// A standard normal deviate (Box–Muller; one of the pair is discarded for simplicity).
pub fn standard_normal(rng: &mut Xoshiro256PlusPlus) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A deep stack of N RBMs, widths `n_0 … n_N`: layer 0 is the input x, layer N the output y.
/// `layers[k-1]` is the paper's RBM k.
///
/// Invariant: at least one RBM, consecutive widths agree, every value finite — checked once, by
/// [`DeepRbm::new`] (and by the loader, which goes through it), so the library's entry points do
/// not check the model again.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepRbm {
    pub(crate) layers: Vec<Rbm>,
}

impl DeepRbm {
    /// Build from RBMs, checking that consecutive widths agree and every value is finite.
    pub fn new(layers: Vec<Rbm>) -> Result<Self> {
        let m = DeepRbm { layers };
        m.validate()?;
        Ok(m)
    }

    /// Random stack for the given widths `n_0 … n_N` (Gaussian weights of std `scale`).
    pub fn random(widths: &[usize], scale: f32, rng: &mut Xoshiro256PlusPlus) -> Result<Self> {
        check_widths(widths)?;
        if estimated_bytes(widths).is_none_or(|b| b > isize::MAX as u64) {
            return Err(Error::invalid(format!(
                "widths {widths:?}: the model has too many parameters to address"
            )));
        }
        DeepRbm::new(
            widths
                .windows(2)
                .map(|w| Rbm::random(w[0], w[1], scale, rng))
                .collect::<Result<_>>()?,
        )
    }

    /// The same stack with every RBM's parameters edited by `edit(k, parts)` (k = 1…N), checked
    /// again: a way to build hand-made or perturbed models without breaking the invariant.
    pub fn edited(&self, mut edit: impl FnMut(usize, &mut RbmParts)) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p = r.to_parts();
                edit(i + 1, &mut p);
                Rbm::from_parts_unchecked(p)
            })
            .collect();
        DeepRbm::new(layers)
    }

    /// Number of RBMs, N.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// The RBMs, `rbms()[k-1]` = RBM k.
    pub fn rbms(&self) -> &[Rbm] {
        &self.layers
    }

    /// Widths `n_0 … n_N`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.layers[0].n_down];
        w.extend(self.layers.iter().map(|l| l.n_up));
        w
    }

    /// Input width `n_0`.
    pub fn n_inputs(&self) -> usize {
        self.layers[0].n_down
    }

    /// Output width `n_N` (the number of classes).
    pub fn n_outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].n_up
    }

    /// RBM k of the paper (1-based).
    pub fn rbm(&self, k: usize) -> &Rbm {
        &self.layers[k - 1]
    }

    /// Consistency of widths and values (the invariant; training checks it after its updates).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::shape("a deep RBM needs at least one layer"));
        }
        for (i, l) in self.layers.iter().enumerate() {
            l.validate(&format!("rbm{}", i + 1))?;
        }
        for (i, p) in self.layers.windows(2).enumerate() {
            if p[0].n_up != p[1].n_down {
                return Err(Error::shape(format!(
                    "rbm{} has upper width {} but rbm{} has lower width {}",
                    i + 1,
                    p[0].n_up,
                    i + 2,
                    p[1].n_down
                )));
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

    /// The fingerprint as `model.json` writes it: 16 hexadecimal digits.
    pub fn fingerprint_hex(&self) -> String {
        format!("{:016x}", self.fingerprint())
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

/// Depths (numbers of RBMs) are ≥ 1 and at least one is given; `what` names them in messages.
pub fn check_depths(what: &str, depths: &[usize]) -> Result<()> {
    if depths.is_empty() {
        return Err(Error::invalid(format!("{what}: no depths given")));
    }
    if depths.contains(&0) {
        return Err(Error::invalid(format!("{what}: depth 0 is not a network")));
    }
    Ok(())
}

/// Widths `[n_in, hidden × (depth − 1), n_out]` of a stack of `depth` RBMs with equal hidden
/// widths (the depth benchmarks and the depth study).
pub fn stack_widths(n_in: usize, hidden: usize, depth: usize, n_out: usize) -> Vec<usize> {
    let mut w = vec![n_in];
    w.extend(std::iter::repeat_n(hidden, depth.saturating_sub(1)));
    w.push(n_out);
    w
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
        let mut r = Rbm::random(4, 3, 1.0, &mut rng).unwrap();
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
        let m = DeepRbm::random(&[4, 3, 2], 1.0, &mut rng).unwrap();
        assert_eq!(m.widths(), vec![4, 3, 2]);
        let e = m
            .edited(|k, p| {
                if k == 2 {
                    p.w[0] = f32::NAN;
                }
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("rbm2.W[0]"), "{e}");
        let e = m
            .edited(|_, p| p.a.pop().map(drop).unwrap_or(()))
            .unwrap_err();
        assert!(e.to_string().contains("rbm1.a has length 2"), "{e}");
        let same = m.edited(|_, _| ()).unwrap();
        assert_eq!(same, m);
    }

    #[test]
    fn absurd_sizes_are_refused_not_allocated() {
        let e = Rbm::zeros(usize::MAX / 2, 3).unwrap_err().to_string();
        assert!(e.contains("too many weights"), "{e}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let e = DeepRbm::random(&[64, usize::MAX / 8, 10], 1.0, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many parameters"), "{e}");
        // 2^61 weights of 4 bytes: addressable in u64 but never allocatable.
        let e = Rbm::zeros(1 << 31, 1 << 30).unwrap_err().to_string();
        assert!(e.contains("cannot allocate"), "{e}");
        assert_eq!(estimated_bytes(&[2, 3]), Some((6 + 2 + 3) * 4));
        assert_eq!(
            estimated_bytes(&[64, 100_000_000, 10]),
            Some(30_400_000_296)
        );
        assert_eq!(estimated_bytes(&[usize::MAX, usize::MAX]), None);
    }
}
