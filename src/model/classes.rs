//! ImageNet class names and the network's most probable classes, for `classify` and
//! the live view alike.

use std::sync::OnceLock;

use serde::Serialize;

static CLASSES: OnceLock<Vec<&'static str>> = OnceLock::new();

/// ImageNet-1k class name of index `class` (0..1000).
pub fn imagenet_label(class: usize) -> &'static str {
    let classes = CLASSES.get_or_init(|| {
        include_str!("../arch/imagenet_classes.txt")
            .lines()
            .collect()
    });
    classes.get(class).copied().unwrap_or("?")
}

/// One of the classes the network gives an image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Guess {
    pub class: usize,
    pub label: &'static str,
    pub prob: f32,
}

/// Probabilities of `logits` (softmax, summed in f64).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|&e| (e / sum) as f32).collect()
}

/// The `k` most probable classes of `logits`, best first; equally probable ones by
/// class number.
pub fn top_classes(logits: &[f32], k: usize) -> Vec<Guess> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|class| Guess {
            class,
            label: imagenet_label(class),
            prob: probs[class],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_are_softmax_ordered() {
        // exp(0), exp(ln 3) = 3, exp(ln 6) = 6: probabilities 0.1, 0.3, 0.6.
        let logits = [0.0, 3f32.ln(), 6f32.ln()];
        let top = top_classes(&logits, 2);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].class, top[1].class), (2, 1));
        assert!((top[0].prob - 0.6).abs() < 1e-6);
        assert!((top[1].prob - 0.3).abs() < 1e-6);
        assert_eq!(top[0].label, imagenet_label(2));
    }
}
