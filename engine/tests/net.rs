//! The convolutional models on the device: they learn, they refuse what does not fit (the input
//! or the device's buffer limits), and the layer list holds together (shapes, parameters,
//! determinism). Their gradients are checked against burn's autodiff in
//! `bench/tests/burn_oracle.rs`.
mod common;

use a2cid_engine::models::net::groups_for;
use a2cid_engine::{InputShape, ModelKind, ModelSpec};
use common::*;
use rand::Rng;

/// 8×8 images of 4 classes: a fixed random prototype per class plus noise.
fn toy_images(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = rng(seed);
    let protos: Vec<Vec<f32>> = (0..4).map(|_| random_vec(&mut r, 64, 1.0)).collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let c = r.random_range(0..4u32);
        x.extend(
            protos[c as usize]
                .iter()
                .map(|v| v + 0.5 * (r.random::<f32>() - 0.5)),
        );
        y.push(c);
    }
    (x, y)
}

/// Plain SGD steps from the model's own gradients: the loss on the batch must fall.
fn learns(kind: ModelKind, width: usize) {
    let spec = ModelSpec::new(kind, &[], width, InputShape([1, 8, 8]), 4).unwrap();
    let (x, y) = toy_images(32, 5);
    let mut model = spec.build(gpu(), 32).unwrap();
    let mut params = model.init(1);
    model.set_params(&params).unwrap();
    let mut losses = Vec::new();
    for _ in 0..25 {
        model.reset_stats().unwrap();
        model.forward_backward(&x, &y).unwrap();
        losses.push(model.read_stats().unwrap().loss_sum / 32.0);
        let g = model.grads().unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{kind}: non-finite gradient"
        );
        for (p, g) in params.iter_mut().zip(&g) {
            *p -= 0.05 * g;
        }
        model.set_params(&params).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last < 0.3 * first,
        "{kind}: loss {first} -> {last}: {losses:?}"
    );
    let (eval_loss, acc) = model.evaluate(&x, &y).unwrap();
    assert!(
        acc > 0.9 && eval_loss < first,
        "{kind}: accuracy {acc}, loss {eval_loss}"
    );
}

#[test]
fn cnn_learns_a_toy_problem() {
    learns(ModelKind::Cnn, 4);
}

#[test]
fn resnet_learns_a_toy_problem() {
    learns(ModelKind::ResNet(8), 8);
}

#[test]
fn a_batch_too_large_for_the_device_is_refused_with_the_numbers_and_the_device_goes_on() {
    let ctx = gpu();
    let spec = ModelSpec::new(ModelKind::Cnn, &[], 16, InputShape([1, 28, 28]), 10).unwrap();
    let limit = 4 * ctx.max_storage_elems() as u64;
    // The smallest batch whose first convolution's output exceeds one storage binding; the input
    // (act0, 784 values per image against the convolution's thousands) still fits.
    let conv = spec.net().unwrap().shapes[1].len() as u64;
    assert!(conv > 784, "{conv}");
    let batch = limit / (4 * conv) + 1;
    let err = match spec.build(ctx.clone(), batch as usize) {
        Ok(_) => panic!("a batch of {batch} built although act1 needs more than {limit} bytes"),
        Err(e) => e.to_string(),
    };
    let needs = format!("\"act1\" needs {} bytes", 4 * conv * batch);
    assert!(
        err.contains(&needs)
            && err.contains(&format!("at most {limit} bytes"))
            && err.contains("smaller model or batch"),
        "{err}"
    );
    // Refused before any work: the device goes on training a model that fits.
    let mut model = spec.build(ctx, 8).unwrap();
    model.set_params(&model.init(2)).unwrap();
    let mut r = rng(9);
    let x = random_vec(&mut r, 8 * 784, 1.0);
    let y: Vec<u32> = (0..8).map(|i| i % 10).collect();
    let (loss, _) = model.evaluate(&x, &y).unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
}

#[test]
fn models_that_do_not_fit_the_input_are_refused_naming_both() {
    let cases = [
        (ModelKind::Cnn, 16, [1, 3, 3]),
        (ModelKind::ResNet(8), 16, [1, 2, 9]),
        (ModelKind::Cnn, 0, [1, 28, 28]),
    ];
    for (kind, width, input) in cases {
        let err = ModelSpec::new(kind, &[], width, InputShape(input), 10)
            .unwrap_err()
            .to_string();
        let shown = InputShape(input).to_string();
        assert!(err.contains(&shown) && err.contains("4×4"), "{kind}: {err}");
    }
    let err = "resnet:9".parse::<ModelKind>().unwrap_err();
    assert!(err.contains("6n + 2"), "{err}");
    let err = "vgg".parse::<ModelKind>().unwrap_err();
    assert!(err.contains("cnn") && err.contains("resnet:D"), "{err}");
    for d in ["resnet:8", "resnet:14", "resnet:20", "cnn", "mlp"] {
        assert_eq!(d.parse::<ModelKind>().unwrap().to_string(), d);
    }
}

#[test]
fn resnet_depths_have_the_expected_layers_and_parameters() {
    for (depth, convs) in [(8, 7 + 2), (14, 13 + 2), (20, 19 + 2)] {
        let spec = ModelSpec::new(
            ModelKind::ResNet(depth),
            &[],
            16,
            InputShape([1, 28, 28]),
            10,
        )
        .unwrap();
        let net = spec.net().unwrap();
        let names: Vec<&str> = net
            .layout
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        // D − 1 convolutions on the main path and 2 projection shortcuts; one linear layer.
        let n_convs = names.iter().filter(|n| n.contains(".conv")).count();
        assert_eq!(n_convs, convs, "resnet:{depth}: {names:?}");
        assert_eq!(names.iter().filter(|n| n.starts_with("fc")).count(), 2);
        // The logits and the last stage's resolution: 28 → 14 → 7.
        let last_pool_in = net.shapes[net.shapes.len() - 3];
        assert_eq!((last_pool_in.c, last_pool_in.h), (64, 7), "resnet:{depth}");
        assert_eq!(net.shapes.last().unwrap().c, 10);
        // Deterministic and distinct per seed; gammas start at 1.
        assert_eq!(net.init(3), net.init(3));
        assert_ne!(net.init(3), net.init(4));
        let g = net.layout.get("stem.gn.gamma").unwrap();
        assert!(net.init(3)[g.range()].iter().all(|&v| v == 1.0));
    }
    assert_eq!((groups_for(16), groups_for(12), groups_for(5)), (8, 6, 5));
}
