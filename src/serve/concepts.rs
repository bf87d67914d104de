//! What the index's labels say about its units, for the page: every unit scored
//! against every labelled concept (`crate::concepts::score`) once per server, then
//! per unit its best concepts, the labels of its top images and (for the layer
//! before the classifier) the classes it pushes most; and per concept its best
//! unit, for "go to the best unit for this concept".
//!
//! An index without labels has no concepts: the lists are empty, not an error. The
//! classifier hint needs no labels, so it is scored for the layer that has one.

use std::path::Path;

use serde::Serialize;

use super::unit::UnitReport;
use super::LayerEntry;
use crate::concepts::{self, Hint, Options, Scores, Skipped};
use crate::model::Network;
use crate::store::{SetKind, Store};
use crate::Result;

/// Concepts shown per unit.
pub const BEST: usize = 5;
/// Classifier classes shown per unit.
pub const HINTS: usize = 5;

/// A unit's score for one of its best concepts.
#[derive(Clone, Debug, Serialize)]
pub struct UnitConcept {
    /// `set/name`.
    pub concept: String,
    /// Scored images showing it.
    pub images: usize,
    pub ap: f32,
    pub auroc: f32,
    /// Images of the concept among the unit's top 9.
    pub top9: u8,
    pub detector: bool,
}

/// A concept's best unit (highest AP, then AUROC, then network order).
#[derive(Clone, Debug, Serialize)]
pub struct BestUnit {
    /// The layer as `/api/layers` names it.
    pub layer: String,
    pub unit: usize,
    pub ap: f32,
    pub auroc: f32,
    pub top9: u8,
    pub detector: bool,
}

/// One concept of `/api/concepts`.
#[derive(Clone, Debug, Serialize)]
pub struct ConceptEntry {
    /// `set/name`.
    pub concept: String,
    pub set: String,
    pub name: String,
    pub kind: SetKind,
    pub images: usize,
    /// Units that count as its detectors.
    pub detectors: usize,
    /// `None` only when no layer was scored.
    pub best: Option<BestUnit>,
}

/// The detector rule, for the page to state it.
#[derive(Clone, Debug, Serialize)]
pub struct Thresholds {
    pub ap: f32,
    pub auroc: f32,
    pub min_images: usize,
}

/// `/api/concepts`.
#[derive(Clone, Debug, Serialize)]
pub struct ConceptList {
    /// Images scored.
    pub images: usize,
    pub detector: Thresholds,
    /// In the index's order (by set, then name).
    pub concepts: Vec<ConceptEntry>,
    /// Concepts left out (no indexed image, or every one, shows them).
    pub skipped: Vec<Skipped>,
}

impl ConceptList {
    /// No concepts (no database).
    pub fn empty() -> ConceptList {
        ConceptList {
            images: 0,
            detector: Thresholds::RULE,
            concepts: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

impl Thresholds {
    const RULE: Thresholds = Thresholds {
        ap: concepts::DETECTOR_AP,
        auroc: concepts::DETECTOR_AUROC,
        min_images: concepts::DETECTOR_MIN_IMAGES,
    };
}

/// The scores and what is derived from them, computed once per server.
pub struct Concepts {
    scores: Scores,
    /// The page's name of each scored layer, in `scores.layers` order.
    names: Vec<String>,
    /// Per scored layer: the classifier hint per unit, where the layer has one.
    hints: Vec<Option<Vec<Vec<Hint>>>>,
    /// Whether the index holds labels at all (its concepts may all be skipped).
    labelled: bool,
    list: ConceptList,
}

impl Concepts {
    /// Scores the index `db` for the layers the page offers (`pages`).
    pub fn load(net: &Network, db: &Path, pages: &[LayerEntry]) -> Result<Concepts> {
        let store = Store::open_readonly(db)?;
        let run = store.run_info()?;
        let layers = store.layers()?;
        let labelled = !store.concepts()?.is_empty();
        // The hint reads this network's classifier against the index's activations:
        // only meaningful when both come from the same weights.
        let same_weights = run.weights_id == net.weights_id();
        let hinted: Vec<String> = layers
            .iter()
            .filter(|l| same_weights && net.classifier_columns(l.node).is_some())
            .map(|l| l.name.clone())
            .collect();
        // Without labels only the hint is left, which needs just its own layer's peaks.
        let scores = if labelled || !hinted.is_empty() {
            concepts::score(
                &store,
                &Options {
                    layers: (!labelled).then_some(hinted),
                    ..Options::default()
                },
            )?
        } else {
            Scores {
                images: 0,
                concepts: Vec::new(),
                class_sets: Vec::new(),
                layers: Vec::new(),
                skipped: Vec::new(),
            }
        };
        let mut names = Vec::new();
        let mut hints = Vec::new();
        for ls in &scores.layers {
            let info = layers.iter().find(|l| l.id == ls.layer_id);
            let page = info.and_then(|i| pages.iter().find(|p| p.node == i.node));
            names.push(page.map_or_else(|| ls.layer.clone(), |p| p.name.clone()));
            hints.push(
                info.filter(|_| same_weights)
                    .and_then(|i| concepts::hints(net, i, &ls.mean_value, HINTS)),
            );
        }
        let list = ConceptList {
            images: scores.images,
            detector: Thresholds::RULE,
            concepts: (0..scores.concepts.len())
                .map(|c| entry(&scores, &names, c))
                .collect(),
            skipped: scores.skipped.clone(),
        };
        Ok(Concepts {
            scores,
            names,
            hints,
            labelled,
            list,
        })
    }

    pub fn list(&self) -> &ConceptList {
        &self.list
    }

    /// Adds to `rep` its unit's best concepts, the labels of its top images and the
    /// classifier hint, as far as the index has them.
    pub fn fill(&self, rep: &mut UnitReport, db: &Path) -> Result<()> {
        let Some(li) = self.names.iter().position(|n| *n == rep.layer) else {
            return Ok(());
        };
        let s = &self.scores;
        let l = &s.layers[li];
        if rep.unit >= l.units {
            return Ok(());
        }
        if let Some(h) = &self.hints[li] {
            rep.hints = Some(h[rep.unit].clone());
        }
        // A unit that never fires has no top images, and scores only from how far
        // below zero it stays: nothing to show as what it detects.
        if rep.never_fires {
            return Ok(());
        }
        rep.concepts = s
            .best(l, rep.unit, BEST)
            .into_iter()
            .map(|(c, sc)| UnitConcept {
                concept: s.concepts[c].qualified(),
                images: s.concepts[c].images,
                ap: sc.ap,
                auroc: sc.auroc,
                top9: sc.top9,
                detector: s.is_detector(c, &sc),
            })
            .collect();
        if self.labelled && !rep.top.is_empty() {
            let store = Store::open_readonly(db)?;
            let ids: Vec<i64> = rep.top.iter().map(|t| t.image_id).collect();
            rep.labels = concepts::label_counts(&store, &ids)?;
        }
        Ok(())
    }
}

/// Concept `c`'s list entry: its best unit over every scored layer, the first of
/// `Scores::ranked`'s order (found in one pass, without sorting every unit).
fn entry(s: &Scores, names: &[String], c: usize) -> ConceptEntry {
    let info = &s.concepts[c];
    let mut best: Option<(usize, usize, concepts::Score)> = None;
    let mut detectors = 0;
    for (li, l) in s.layers.iter().enumerate() {
        for u in 0..l.units {
            let sc = s.score(l, u, c);
            detectors += usize::from(s.is_detector(c, &sc));
            let better = best.is_none_or(|(_, _, b)| {
                sc.ap
                    .total_cmp(&b.ap)
                    .then(sc.auroc.total_cmp(&b.auroc))
                    .is_gt()
            });
            if better {
                best = Some((li, u, sc));
            }
        }
    }
    ConceptEntry {
        concept: info.qualified(),
        set: info.set.clone(),
        name: info.name.clone(),
        kind: info.kind,
        images: info.images,
        detectors,
        best: best.map(|(li, unit, sc)| BestUnit {
            layer: names[li].clone(),
            unit,
            ap: sc.ap,
            auroc: sc.auroc,
            top9: sc.top9,
            detector: s.is_detector(c, &sc),
        }),
    }
}
