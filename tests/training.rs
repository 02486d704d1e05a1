//! Training end to end on small data: determinism across thread counts, and bad input.
#![allow(clippy::needless_range_loop)]

use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::train::{Method, TrainParams, Trainer};
use rgshield::Params;

fn digits_small() -> data::Dataset {
    let opts = LoadOptions {
        max_train: Some(300),
        max_test: Some(100),
        ..LoadOptions::default()
    };
    data::load(&DataSpec::Digits, &opts).unwrap()
}

fn quick(method: Method) -> TrainParams {
    TrainParams {
        pretrain_epochs: 2,
        sweeps: 2,
        epochs_per_layer: 1,
        finetune_epochs: 10,
        eval_samples: 8,
        ..TrainParams::for_method(method, 1)
    }
}

#[test]
fn training_is_bit_identical_on_one_and_two_threads() {
    let d = digits_small();
    for method in [Method::Eq14, Method::Hybrid] {
        let cfg = quick(method).check().unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    Trainer::new(&d, &cfg)
                        .unwrap()
                        .train(&[64, 16, 16, 10])
                        .unwrap()
                })
        };
        let (m1, o1) = run(1);
        let (m2, o2) = run(2);
        assert_eq!(m1.fingerprint(), m2.fingerprint(), "{method:?}");
        assert_eq!(o1.holdout_accuracy, o2.holdout_accuracy);
    }
}

/// Stochastic epochs after the mean-field fine-tuning: the mean-field phase runs draw for draw as
/// without them, the stochastic phase is recorded after it, and the model kept has a served
/// held-out loss no higher than the mean-field optimum's (it is kept only where it lowers it).
#[test]
fn stochastic_epochs_after_mean_field_start_from_its_optimum_and_never_keep_a_worse_model() {
    let d = digits_small();
    // a fast rate and patience 1 (5 epochs): the mean-field phase runs past its optimum
    let base = TrainParams {
        finetune_epochs: 40,
        finetune_lr: 0.3,
        patience: 1,
        ..quick(Method::Hybrid)
    };
    let train = |cfg: TrainParams| {
        Trainer::new(&d, &cfg.check().unwrap())
            .unwrap()
            .train(&[64, 16, 16, 10])
            .unwrap()
            .1
    };
    let plain = train(base.clone());
    let more = train(TrainParams {
        finetune_stochastic_epochs: 20,
        ..base.clone()
    });
    let phase = |o: &rgshield::train::TrainOutcome, p: &str| -> Vec<(usize, f64)> {
        o.history
            .iter()
            .filter(|r| r.phase == p)
            .map(|r| (r.step, r.holdout_loss))
            .collect()
    };
    assert_eq!(phase(&plain, "finetune"), phase(&more, "finetune"));
    assert!(phase(&plain, "finetune-stochastic").is_empty());
    let stochastic = phase(&more, "finetune-stochastic");
    assert!(stochastic.len() >= 2, "{stochastic:?}");
    let best_mf = phase(&plain, "finetune")
        .iter()
        .map(|r| r.1)
        .fold(f64::INFINITY, f64::min);
    // the stochastic phase starts at the mean-field optimum, not at the last mean-field epoch
    assert_eq!(stochastic[0], (0, best_mf));
    assert_ne!(phase(&plain, "finetune").last().unwrap().1, best_mf);
    let best_all = stochastic.iter().map(|r| r.1).fold(best_mf, f64::min);
    // the first refinement row (step 0) is the kept fine-tuned model's served held-out loss
    let kept = |o: &rgshield::train::TrainOutcome| {
        o.history
            .iter()
            .find(|r| r.phase == "refine" && r.step == 0)
            .unwrap()
            .holdout_loss
    };
    assert_eq!(kept(&plain), best_mf);
    assert_eq!(kept(&more), best_all);
    assert!(kept(&more) <= kept(&plain));
    // a stochastic phase after stochastic fine-tuning is refused, by name
    let e = TrainParams {
        finetune_stochastic: true,
        finetune_stochastic_epochs: 5,
        ..base
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(e.contains("finetune_stochastic_epochs"), "{e}");
    // and so is one for eq. 14, which has no fine-tuning
    let e = TrainParams {
        finetune_stochastic_epochs: 5,
        ..quick(Method::Eq14)
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("finetune_stochastic_epochs") && e.contains("eq. 14"),
        "{e}"
    );
}

#[test]
fn trainer_rejects_bad_configuration_and_widths() {
    let d = digits_small();
    let e = TrainParams {
        batch: 0,
        ..quick(Method::Eq14)
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(e.contains("batch"), "{e}");
    let e = TrainParams {
        lr: f32::NAN,
        ..quick(Method::Eq14)
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(e.contains("lr"), "{e}");
    let cfg = quick(Method::Eq14).check().unwrap();
    let e = Trainer::new(&d, &cfg)
        .unwrap()
        .train(&[64, 8, 9])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("10 classes"), "{e}");
    let mut empty = d.clone();
    empty.train.x.clear();
    empty.train.y.clear();
    let e = Trainer::new(&empty, &cfg).err().unwrap().to_string();
    assert!(e.contains("empty"), "{e}");
}
