//! Class names (ImageNet-1k's, or a `--labels` file's) and the network's most
//! probable classes, for `classify` and the live view alike.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::{Error, Result};

/// The names of a network's output classes.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    names: Arc<Vec<String>>,
}

impl Labels {
    /// ImageNet-1k's names for a network of 1000 outputs; none (classes by number)
    /// for others.
    pub fn for_outputs(n: usize) -> Labels {
        if n != 1000 {
            return Labels::default();
        }
        let names = (0..1000).map(|c| imagenet_label(c).to_string()).collect();
        Labels {
            names: Arc::new(names),
        }
    }

    /// A labels file: one class name per line, in output order (blank lines at the
    /// end ignored); it must name exactly `n` classes.
    pub fn read(path: &Path, n: usize) -> Result<Labels> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > 16 << 20 {
            return Err(bad("a labels file of more than 16 MB".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("labels are not UTF-8 text".into()))?;
        let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        while names.last().is_some_and(|l| l.is_empty()) {
            names.pop();
        }
        if names.len() != n {
            return Err(bad(format!(
                "{} labels for a network of {n} outputs (one name per line)",
                names.len()
            )));
        }
        Ok(Labels {
            names: Arc::new(names),
        })
    }

    /// The name of class `class`; `class N` where there is none.
    pub fn name(&self, class: usize) -> String {
        match self.names.get(class) {
            Some(n) if !n.is_empty() => n.clone(),
            _ => format!("class {class}"),
        }
    }
}

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
    pub label: String,
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
pub fn top_classes(logits: &[f32], k: usize, labels: &Labels) -> Vec<Guess> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|class| Guess {
            class,
            label: labels.name(class),
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
        let top = top_classes(&logits, 2, &Labels::for_outputs(3));
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].class, top[1].class), (2, 1));
        assert!((top[0].prob - 0.6).abs() < 1e-6);
        assert!((top[1].prob - 0.3).abs() < 1e-6);
        assert_eq!(top[0].label, "class 2");
        let imagenet = Labels::for_outputs(1000);
        assert_eq!(imagenet.name(2), imagenet_label(2));
        assert_eq!(imagenet.name(1000), "class 1000");
    }
}
