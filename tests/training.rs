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
