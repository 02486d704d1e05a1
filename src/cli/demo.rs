//! `rgshield demo`: the main job on the embedded digits — train both methods, then analyse,
//! attack, poison one answer and clone the hybrid model, through the same functions as the
//! commands `train`, `analyze`, `attack`, `serve` and `clone-eval`; writes `report.md`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use super::Global;
use super::{analyze, attack, clone_eval, train};
use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::defence::{DefenceContext, DefenceParams, Key, PoisonCaches, Query};
use rgshield::experiments::analyze::AnalyzeParams;
use rgshield::experiments::attack::{table as attack_table, AttackParams, Method as AttackMethod};
use rgshield::experiments::clone_eval::{AttackerSpec, CloneEvalParams};
use rgshield::model::io as model_io;
use rgshield::sample::{argmax, OutputMode, Predictor};
use rgshield::train::{Method, TrainParams};
use rgshield::Params;

/// Flags of `rgshield demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Where the demo writes its models and reports.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Training seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Run `rgshield demo`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    let t0 = Instant::now();
    super::common::prepare_out_dir(&a.out).context("--out")?;
    for method in [Method::Eq14, Method::Hybrid] {
        super::common::prepare_model_dir(&a.out.join(method.to_string()))?;
    }
    let data = data::load(&DataSpec::Digits, &LoadOptions::default())?;
    println!("rgshield demo: {} — {}", data.name, data.description);
    let widths = train::default_widths(&data);
    for method in [Method::Eq14, Method::Hybrid] {
        train::check_train_memory(g, &widths, &TrainParams::for_method(method, a.seed), &data)?;
    }
    let mut md = String::from(
        "# rgshield demo report (digits)\n\nWritten by `rgshield demo`; every number below was measured in this run.\n\n",
    );
    // 1. Train.
    let mut rows = Vec::new();
    for method in [Method::Eq14, Method::Hybrid] {
        let params = TrainParams::for_method(method, a.seed).check()?;
        let dir = a.out.join(method.to_string());
        let t = train::train_and_save(&data, &widths, &params, 64, &dir)
            .with_context(|| format!("training {method}"))?;
        rows.push((method, dir, t));
    }
    let mut table = String::from(
        "| method | widths | test accuracy (served, S=64) | mean-field | seconds | model |\n|---|---|---|---|---|---|\n",
    );
    for (m, dir, t) in &rows {
        table += &format!(
            "| {m} | {widths:?} | {:.4} | {:.4} | {:.1} | {} |\n",
            t.test_accuracy,
            t.test_accuracy_mean_field,
            t.seconds,
            dir.display()
        );
    }
    println!("\n{table}");
    md += "## 1. Training (the paper's eq. 14 rule, and the hybrid)\n\nThe classifier is a stack of binary RBMs \
           (64 → 64 → 64 → 10). `eq14` trains it by the paper's layerwise KL rule after greedy pretraining; \
           `hybrid` fine-tunes by mean-field back-propagation and then refines by eq. 14. \
           The served output is the Rao-Blackwellised mean of the top layer over S = 64 ancestral samples.\n\n";
    md += &table;
    let (eq14_acc, hybrid_acc) = (rows[0].2.test_accuracy, rows[1].2.test_accuracy);
    md += &format!(
        "\n**In short:** {} serves more test digits correctly ({:.1}% against {:.1}%); the sections \
         below study the hybrid model.\n",
        if hybrid_acc >= eq14_acc {
            "the hybrid"
        } else {
            "eq. 14"
        },
        100.0 * hybrid_acc.max(eq14_acc),
        100.0 * hybrid_acc.min(eq14_acc)
    );
    let dir = rows[1].1.clone();
    let (model, _) = model_io::load(&dir)?;

    // 2. RG analysis of a few inputs.
    let an_params = AnalyzeParams {
        inputs: (0..4).collect(),
        samples: 3000,
        blocks: 4,
        ..AnalyzeParams::default()
    }
    .check()?;
    let (an, an_plots) = analyze::run_in(&model, &data, &an_params, &dir.join("analysis"))?;
    md += "\n## 2. RG analysis (`analyze`)\n\nFor each input x the network is a Markov chain x → h₁ → h₂ → h₃; \
           the stability matrices T⁽ᵏ⁾ = C_kk⁻¹ C_k,k−1 of the couplings are estimated from 3000 exact ancestral \
           samples, and chained into the Fisher information of the output w.r.t. the input. The data-processing \
           inequality bounds it by the first layer's Fisher information:\n\n\
           | input | label | top F_x (direct) | first-layer bound | ratio | mean-field ratio |\n|---|---|---|---|---|---|\n";
    for i in &an.inputs {
        md += &format!(
            "| {} | {} | {} | {:.2} | {:.3} | {:.3} |\n",
            i.index,
            i.label,
            match i.fisher.direct_top_std_err {
                Some(se) => format!("{:.3} ± {se:.3}", i.fisher.direct_top),
                None => format!("{:.3} (no error bar)", i.fisher.direct_top),
            },
            i.fisher.bound_top,
            i.fisher.ratio_direct,
            i.fisher.ratio_mean_field
        );
    }
    md += "\nPlots:\n\n";
    for p in &an_plots {
        md += &format!(
            "![{0}](hybrid/analysis/{0})\n",
            p.file_name().and_then(|f| f.to_str()).unwrap_or("")
        );
    }
    let ratios: Vec<f64> = an.inputs.iter().map(|i| i.fisher.ratio_direct).collect();
    if let Some(r) = rgshield::report::stats::median(&ratios) {
        md += &format!(
            "\n**In short:** a small change of the input moves the served output by a median {:.1}% of \
             the Fisher information its first layer alone would allow (ratio {r:.3}; the \
             data-processing inequality keeps it at most 1): the deeper layers pass on only part of \
             what the first one sees.\n",
            100.0 * r
        );
    }

    // 3. Adversarial attack.
    let at_params = AttackParams {
        inputs: (0..20).collect(),
        epsilons: vec![0.5, 1.0, 2.0],
        pixels: vec![1, 4],
        samples: 1000,
        ..AttackParams::default()
    }
    .check()?;
    let at = attack::run_in(&model, &data, &at_params, &dir.join("attack"))?;
    md += &format!(
        "\n## 3. Adversarial attack (`attack`)\n\nThe top eigenvector of the input Fisher information is the \
         most dangerous direction (SPEC §6). Success = the served class changes, over the {} of {} inputs \
         served correctly, at equal actual L2 norm:\n\n{}\n![curves](hybrid/attack/attack_curves.png)\n\
         ![examples](hybrid/attack/attack_examples.png)\n",
        at.n_correct,
        at.n_inputs,
        attack_table(&at)
    );
    let rate_at = |m: AttackMethod, eps: f64| {
        at.results
            .iter()
            .find(|r| r.method == m && r.budget == eps)
            .and_then(|r| r.rate)
    };
    if let (Some(f), Some(p), Some(r)) = (
        rate_at(AttackMethod::Fisher, 1.0),
        rate_at(AttackMethod::Pgd, 1.0),
        rate_at(AttackMethod::Random, 1.0),
    ) {
        md += &format!(
            "\n**In short:** a perturbation of L2 norm 1 along the Fisher direction changes the served \
             class of {:.0}% of these inputs, against {:.0}% for PGD and {:.0}% for a random direction of \
             the same size: the higher the share, the more dangerous the direction.\n",
            100.0 * f,
            100.0 * p,
            100.0 * r
        );
    }

    // 4. Serve-side poisoning of one answer: the paper's first form and the second form.
    let caches = PoisonCaches::new(Some(a.out.join("poison-cache")), data.image_shape);
    let key = Key::public("rgshield demo");
    let ctx = DefenceContext {
        model: &model,
        key: &key,
        caches: &caches,
    };
    let predictor = Predictor::new(
        &model,
        OutputMode::Served {
            samples: 64,
            seed: 0,
        },
    );
    let x = data.test.row(0);
    let y = predictor.output(x);
    let fmt = |v: &[f32]| {
        v.iter()
            .map(|a| format!("{a:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    md += &format!(
        "\n## 4. Poisoned serving (`serve --defence …`)\n\nTest input 0, served ŷ = [{}] (class {}). \
         The first form (`rg`, SPEC §8) steps along the per-class poison direction u (the top eigenvector of the \
         generation network's Fisher information w.r.t. the output, SPEC §7) and stops at the first output that \
         reaches 0; the second form (`rg-vertex`, SPEC §11) spends an L1 budget inside a feasible set that keeps \
         the class by a margin and every value in [f, 1 − f], choosing the vertex that moves the clone's eq. 14 \
         targets most (objective B):\n\n| defence | answer | class | L1 | KL |\n|---|---|---|---|---|\n",
        fmt(&y),
        argmax(&y)
    );
    let mut answers = Vec::new();
    for spec in ["rg:eps=0.2", "rg-vertex:objective=B,eps=0.6"] {
        let params: DefenceParams = spec.parse()?;
        let d = params.build(&ctx)?;
        let ans = d.defend(&Query {
            x,
            y: &y,
            seed: key.query_seed(x),
        })?;
        md += &format!(
            "| `{}` | [{}] | {} | {:.4} | {:.5} |\n",
            d.name(),
            fmt(&ans.output),
            argmax(&ans.output),
            ans.distortion.l1,
            ans.distortion.kl
        );
        answers.push((argmax(&ans.output), ans.distortion.l1));
    }
    let kept = answers.iter().all(|(c, _)| *c == argmax(&y));
    md += &format!(
        "\n`rgshield serve --model {} --defence rg-vertex:objective=B,eps=0.6` serves the second form over \
         HTTP.\n\n**In short:** {} and the answer moves by L1 {:.4} under the first form against {:.4} under \
         the second: the larger the move that keeps the class, the more room the defence has to mislead a \
         clone while an honest user still gets the right class.\n",
        dir.display(),
        if kept {
            "both forms keep the served class"
        } else {
            "a form changed the served class"
        },
        answers[0].1,
        answers[1].1
    );

    // 5. A small cloning experiment.
    let mut eq14 = TrainParams::for_method(Method::Eq14, 1);
    // The clone-training budget of the README's experiments (20 pretraining epochs, ≤ 20
    // sweeps): with 10 and 10 an eq. 14 clone of 500 queries stays at chance.
    eq14.pretrain_epochs = 20;
    eq14.sweeps = 20;
    let ce_params = CloneEvalParams {
        defences: [
            "none",
            "rg-vertex:objective=B,eps=0.6",
            "partner-table:eps=0.6",
            "random-vertex:eps=0.6",
            "top1",
        ]
        .iter()
        .map(|s| s.parse())
        .collect::<rgshield::Result<_>>()?,
        attackers: AttackerSpec::parse_list("eq14,distill")?,
        budget: 500,
        seeds: vec![1, 2],
        transfer_inputs: 50,
        eq14,
        ..CloneEvalParams::default()
    }
    .check()?;
    let (ce, ce_md) = clone_eval::run_in(&model, &data, &ce_params, &caches, &dir.join("clone"))?;
    println!("{ce_md}");
    md += &format!(
        "\n## 5. Cloning (`clone-eval`, small budget)\n\nAn attacker queries {} inputs (test images it was \
         never trained on, topped up with pixel-flipped copies), receives the defended outputs, and trains a \
         clone: `eq14` copies the victim's architecture and the paper's training rule ({} pretraining \
         epochs, at most {} sweeps), `distill` fits a softmax MLP. Transfer = the victim's class changes \
         under the clone's Fisher-direction perturbation at L2 = {}. Two seeds only: differences smaller \
         than the spread are noise. The full experiment is `rgshield clone-eval` (README).\n\n{}\n",
        ce_params.budget,
        ce_params.eq14.pretrain_epochs,
        ce_params.eq14.sweeps,
        ce_params.transfer_epsilon,
        ce_md
    );
    let accuracies: Vec<String> = ce
        .cells
        .iter()
        .filter(|c| c.attacker == "eq14")
        .map(|c| format!("{} {:.3}", c.defence_kind, c.clone_accuracy.0))
        .collect();
    if !accuracies.is_empty() {
        md += &format!(
            "\n**In short:** the eq14 clone's test accuracy per defence is {}; a defence works when it \
             lowers the clone's accuracy more than `random-vertex` does at the same distortion (L1 \
             column), and with two seeds a difference smaller than the ± spread is noise.\n",
            accuracies.join(", ")
        );
    }
    md += &format!("\nDemo run time: {:.0} s.\n", t0.elapsed().as_secs_f64());
    let report_path = a.out.join("report.md");
    rgshield::util::atomic_write(&report_path, md.as_bytes())?;
    println!(
        "wrote {} (training, RG analysis, attack, poisoned serving, cloning) in {:.0} s",
        report_path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
