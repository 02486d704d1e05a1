//! The exact series of the depth study (issue 14 item 3): exact input Fisher information at every
//! depth of a stack with tiny hidden layers, the exact served Jacobian, and the mean-field reading,
//! per input. Shared by `examples/exact_series.rs` (which runs the series) and
//! `tests/exact_series.rs` (which checks it against `rgshield::exact` on N ≤ 3).
//!
//! The computation is the one of `rgshield::exact::fisher_input_layers`, rearranged for speed:
//! * `∂q_1(h|x)/∂x = q_1(h) (h − μ_1)ᵀ W_1 = E_1(h) W_1`, with `E_1 = diag(q_1)(H − 1μ_1ᵀ)` of rank
//!   n_1 columns; the kernels act on the left, so `∂q_k/∂x = E_k W_1` with `E_k = K_k ⋯ K_2 E_1`.
//!   Only the `1 + n_1` columns `[q, E]` are pushed (not `1 + n_0`), and
//!   `F_k = W_1ᵀ (Σ_h E_k(h)ᵀ E_k(h) / q_k(h)) W_1`.
//! * every kernel `K_k[t, s] = t_k(h_k = t | h_{k−1} = s)` is formed once per stack as a dense
//!   matrix, and a block of inputs is pushed by one matrix product (`faer`, sequential: the
//!   parallelism is over blocks of inputs, so results do not depend on the thread count).
//!
//! The served output is `E[h_N | x] = Hᵀ q_N` (equal to `E[σ(W_N h_{N−1} + a_N)]`), its Jacobian
//! `Hᵀ E_N W_1` — the stochastic twin of the mean-field Jacobian `∂μ_N/∂x`.

#![allow(dead_code)] // the example and the test use different parts

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use rgshield::exact::state;
use rgshield::linalg::dense;
use rgshield::model::kernels::up_probs_f64;
use rgshield::model::stack_widths;
use rgshield::rg::fisher::{first_layer_bound, mean_field_reading, top_eigen};
use rgshield::rg::state_fisher::product_bernoulli;
use rgshield::{DeepRbm, Error, Rbm, Result};

/// Largest enumerated layer width: `rgshield::exact`'s.
pub use rgshield::exact::MAX_WIDTH;

/// Inputs pushed together through the kernels (one matrix product per layer and block).
pub const BLOCK: usize = 10;

/// The up kernel of an RBM as a dense matrix `K[t, s] = t(h_up = t | h_down = s)`
/// (`2^{n_up} × 2^{n_down}`).
pub fn up_kernel(rbm: &Rbm) -> Result<Mat<f64>> {
    let (nd, nu) = (rbm.n_down(), rbm.n_up());
    check_width(nd)?;
    check_width(nu)?;
    let mut k = Mat::<f64>::zeros(1 << nu, 1 << nd);
    let mut col = vec![0.0; 1 << nu];
    for s in 0..(1usize << nd) {
        product_bernoulli(&up_probs_f64(rbm, &state(s, nd)), &mut col);
        for (t, &v) in col.iter().enumerate() {
            k[(t, s)] = v;
        }
    }
    Ok(k)
}

fn check_width(n: usize) -> Result<()> {
    if n > MAX_WIDTH {
        return Err(Error::invalid(format!(
            "exact series: a hidden layer of width {n} (at most {MAX_WIDTH} are enumerated)"
        )));
    }
    Ok(())
}

/// The exact quantities of one input, in full (for the tests).
#[derive(Clone, Debug)]
pub struct ExactInput {
    /// `F_k`, the Fisher information w.r.t. x of `q_k(·|x)`, k = 1…N (`n_0 × n_0`).
    pub fisher: Vec<Mat<f64>>,
    /// The served output `E[h_N | x]` (`n_N`).
    pub served: Vec<f64>,
    /// Its Jacobian `∂E[h_N | x]/∂x` (`n_N × n_0`).
    pub served_jacobian: Mat<f64>,
}

/// The exact quantities of a block of inputs through one stack, with its kernels `kernels[k−2]`
/// = `K_k` for k = 2…N (from [`up_kernel`]).
pub fn exact_block(
    model: &DeepRbm,
    kernels: &[Mat<f64>],
    xs: &[&[f32]],
) -> Result<Vec<ExactInput>> {
    let r1 = model.rbm(1);
    let (n0, n1) = (r1.n_down(), r1.n_up());
    check_width(n1)?;
    if kernels.len() + 1 != model.depth() {
        return Err(Error::invalid("exact series: one kernel per RBM 2…N"));
    }
    let cols = 1 + n1;
    let w1 = Mat::from_fn(n1, n0, |i, c| r1.w()[i * n0 + c] as f64);
    // Columns [q_1, E_1] of every input of the block.
    let mut cur = Mat::<f64>::zeros(1 << n1, xs.len() * cols);
    let mut q = vec![0.0; 1 << n1];
    for (b, x) in xs.iter().enumerate() {
        if x.len() != n0 {
            return Err(Error::shape(format!(
                "input has {} values, the model {n0} inputs",
                x.len()
            )));
        }
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mu = up_probs_f64(r1, &x64);
        product_bernoulli(&mu, &mut q);
        for (s, &qs) in q.iter().enumerate() {
            cur[(s, b * cols)] = qs;
            for i in 0..n1 {
                cur[(s, b * cols + 1 + i)] = qs * (((s >> i) & 1) as f64 - mu[i]);
            }
        }
    }
    let mut out: Vec<ExactInput> = (0..xs.len())
        .map(|_| ExactInput {
            fisher: Vec::with_capacity(model.depth()),
            served: Vec::new(),
            served_jacobian: Mat::zeros(0, 0),
        })
        .collect();
    let mut width = n1;
    for k in 1..=model.depth() {
        if k > 1 {
            let kk = &kernels[k - 2];
            if kk.ncols() != cur.nrows() {
                return Err(Error::shape("exact series: a kernel of the wrong size"));
            }
            let mut next = Mat::<f64>::zeros(kk.nrows(), cur.ncols());
            matmul(
                next.as_mut(),
                Accum::Replace,
                kk.as_ref(),
                cur.as_ref(),
                1.0,
                Par::Seq,
            );
            rgshield::linalg::clear_upper_vector_state();
            cur = next;
            width = model.rbm(k).n_up();
        }
        for (b, o) in out.iter_mut().enumerate() {
            // G = Σ_h E(h)ᵀ E(h) / q(h), then F = W_1ᵀ G W_1.
            let mut g = Mat::<f64>::zeros(n1, n1);
            for s in 0..cur.nrows() {
                let qs = cur[(s, b * cols)];
                if qs <= 0.0 {
                    continue;
                }
                for i in 0..n1 {
                    let ei = cur[(s, b * cols + 1 + i)] / qs;
                    if ei == 0.0 {
                        continue;
                    }
                    for j in 0..n1 {
                        g[(i, j)] += ei * cur[(s, b * cols + 1 + j)];
                    }
                }
            }
            let g = dense::symmetrise(g.as_ref())?;
            let gw = dense::mul(g.as_ref(), w1.as_ref())?;
            o.fisher.push(dense::symmetrise(
                dense::mul_tn(w1.as_ref(), gw.as_ref())?.as_ref(),
            )?);
            if k == model.depth() {
                // E[h_N] = Hᵀ q_N and its Jacobian Hᵀ E_N W_1.
                let mut served = vec![0.0; width];
                let mut he = Mat::<f64>::zeros(width, n1);
                for s in 0..cur.nrows() {
                    for (u, sv) in served.iter_mut().enumerate() {
                        if (s >> u) & 1 == 1 {
                            *sv += cur[(s, b * cols)];
                            for i in 0..n1 {
                                he[(u, i)] += cur[(s, b * cols + 1 + i)];
                            }
                        }
                    }
                }
                o.served = served;
                o.served_jacobian = dense::mul(he.as_ref(), w1.as_ref())?;
            }
        }
    }
    Ok(out)
}

/// The kernels `K_2 … K_N` of a stack.
pub fn kernels(model: &DeepRbm) -> Result<Vec<Mat<f64>>> {
    (2..=model.depth())
        .map(|k| up_kernel(model.rbm(k)))
        .collect()
}

/// What the series records of one input through one stack.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InputReading {
    /// Top eigenvalue of the exact `F_k`, k = 1…N (the last is the output's `F_x`).
    pub fisher_top: Vec<f64>,
    /// Top eigenvalue of the first-layer bound `W_1ᵀ diag(μ_1(1−μ_1)) W_1` (from `rgshield::rg`).
    pub bound_top: f64,
    /// `fisher_top[N−1] / bound_top`.
    pub ratio: f64,
    /// Top singular value of the exact served Jacobian `∂E[h_N|x]/∂x`.
    pub served_jacobian_sv: f64,
    /// Top singular value of the mean-field Jacobian `∂μ_N/∂x`.
    pub mf_jacobian_sv: f64,
    /// Top eigenvalue of the mean-field (product-Bernoulli) Fisher information.
    pub mf_fisher_top: f64,
    /// Class of the largest exact served output.
    pub predicted: usize,
}

/// The series' readings of every input through one stack (blocks of [`BLOCK`] inputs in parallel).
pub fn stack_readings(model: &DeepRbm, xs: &[&[f32]]) -> Result<Vec<InputReading>> {
    let ks = kernels(model)?;
    let blocks: Vec<Vec<InputReading>> = xs
        .par_chunks(BLOCK)
        .map(|block| -> Result<Vec<InputReading>> {
            let exact = exact_block(model, &ks, block)?;
            block
                .iter()
                .zip(exact)
                .map(|(x, e)| reading(model, x, &e))
                .collect()
        })
        .collect::<Result<_>>()?;
    Ok(blocks.into_iter().flatten().collect())
}

fn reading(model: &DeepRbm, x: &[f32], e: &ExactInput) -> Result<InputReading> {
    let fisher_top = e
        .fisher
        .iter()
        .map(|f| top_eigen(f.as_ref()).map(|t| t.0))
        .collect::<Result<Vec<_>>>()?;
    let bound_top = top_eigen(first_layer_bound(model, x)?.as_ref())?.0;
    let mf = mean_field_reading(model, x)?;
    let top_sv = |m: &Mat<f64>| -> Result<f64> {
        Ok(dense::singular_values(m.as_ref())?
            .first()
            .copied()
            .unwrap_or(0.0))
    };
    let predicted = e
        .served
        .iter()
        .enumerate()
        .fold(
            (0, f64::MIN),
            |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
        )
        .0;
    let last = fisher_top[fisher_top.len() - 1];
    Ok(InputReading {
        ratio: last / bound_top,
        fisher_top,
        bound_top,
        served_jacobian_sv: top_sv(&e.served_jacobian)?,
        mf_jacobian_sv: top_sv(&mf.jacobian)?,
        mf_fisher_top: top_eigen(mf.fisher.as_ref())?.0,
        predicted,
    })
}

/// The random stack of the series: widths `[n_in, width × (N−1), n_out]`, Gaussian weights of
/// standard deviation `scale`, zero biases, drawn from a stream fixed by (`seed`, N) alone — so a
/// seed's stacks at two scales differ only by the scale, and each N is its own draw.
pub fn random_stack(
    n_in: usize,
    width: usize,
    n_out: usize,
    depth: usize,
    scale: f32,
    seed: u64,
) -> Result<DeepRbm> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(rgshield::util::mix_seed(seed, depth as u64));
    DeepRbm::random(&stack_widths(n_in, width, depth, n_out), scale, &mut rng)
}
