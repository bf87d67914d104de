//! What a forward pass over a span of nodes will do, worked out before it runs and
//! kept for the next pass of the same shape: each node's memory layout, which convs
//! take the residual sum after them into their own output, and how many times each
//! output is read (so that its buffer goes back to the pool after its last reader).
//! The executor (`Network::run_nodes`) then only follows it.

use super::{Layer, Network, Tap};
use crate::arch::Act;
use crate::{Error, Result};

/// Plans a network keeps: a pass is one of a few shapes (the image-by-image part,
/// the batched tail, each with its taps), so a handful covers every call.
const KEPT: usize = 16;

/// The pass a plan is for: nodes `start..` up to the deepest tap, on `h` x `w` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Key {
    pub start: usize,
    pub h: usize,
    pub w: usize,
    pub taps: Vec<Tap>,
}

pub(super) struct Plan {
    pub key: Key,
    /// The deepest tap: nothing past it is computed.
    pub last: usize,
    /// `[c, h, w]` of every node's output at this input size.
    pub shapes: Vec<[usize; 3]>,
    /// Per node up to `last`, whether its output is channel-blocked.
    pub blocked: Vec<bool>,
    /// Per node, the layout it reads its inputs in: its own, but for stems.
    pub reads_blocked: Vec<bool>,
    /// Per node, how many times its output will be read: by the nodes of the pass,
    /// and once by each tap after the activation.
    pub uses: Vec<usize>,
    /// Per node, whether a tap wants its output before the activation.
    pub want_pre: Vec<bool>,
    /// Per conv whose only reader is the two-input sum right after it: that sum's
    /// other input. The conv then writes the sum, and the sum node takes it over.
    pub fused_add: Vec<Option<usize>>,
}

impl Plan {
    fn new(net: &Network, key: Key) -> Result<Plan> {
        let last = key.taps.iter().map(|t| t.node).max().expect("a tap");
        let (start, h, w) = (key.start, key.h, key.w);
        let nodes = &net.arch.nodes;
        let shapes = net.arch.shapes_for(h, w);
        if let Some(i) = (0..=last).find(|&i| shapes[i].contains(&0)) {
            return Err(Error::Shape(format!(
                "a {h}x{w} input is too small for {}: layer {} would be empty",
                net.arch.name, nodes[i].name
            )));
        }
        // A fully connected layer takes as many features as it was made for: an input of
        // another size flattens into another count (a graph without adaptive pooling).
        for i in 1..=last {
            if let Layer::Linear(lin) = &net.layers[i] {
                let got: usize = shapes[nodes[i].inputs[0]].iter().product();
                if got != lin.in_features() {
                    return Err(Error::Shape(format!(
                        "a {h}x{w} input gives {} {got} features, made for {}",
                        nodes[i].name,
                        lin.in_features()
                    )));
                }
            }
        }
        let mut want_pre = vec![false; last + 1];
        let mut uses = vec![0usize; last + 1];
        for node in &nodes[start.min(last + 1)..=last] {
            for &i in &node.inputs {
                uses[i] += 1;
            }
        }
        for t in &key.taps {
            if t.pre {
                want_pre[t.node] = true;
            } else {
                uses[t.node] += 1;
            }
        }
        let blocked = net.blocked_layout(start, last);
        let reads_blocked = (0..=last)
            .map(|i| match &net.layers[i] {
                Layer::Conv(conv) => blocked[i] && conv.reads_blocked(),
                _ => blocked[i],
            })
            .collect();
        let fused_add = (0..=last)
            .map(|i| {
                let Layer::Conv(conv) = &net.layers[i] else {
                    return None;
                };
                let sum = nodes.get(i + 1).filter(|_| i < last)?;
                let fuses = i >= start
                    && uses[i] == 1
                    && conv.act() == Act::None
                    && net.split[i] == Act::None
                    && matches!(net.layers[i + 1], Layer::Add(_))
                    && sum.inputs.len() == 2
                    && sum.inputs.contains(&i)
                    && sum.inputs.iter().all(|&j| blocked[j] == blocked[i]);
                fuses.then(|| {
                    if sum.inputs[0] == i {
                        sum.inputs[1]
                    } else {
                        sum.inputs[0]
                    }
                })
            })
            .collect();
        Ok(Plan {
            key,
            last,
            shapes,
            blocked,
            reads_blocked,
            uses,
            want_pre,
            fused_add,
        })
    }

    /// Numbers in node `i`'s output for `n` images, in its layout.
    pub fn len_of(&self, i: usize, n: usize) -> usize {
        let [c, h, w] = self.shapes[i];
        n * if self.blocked[i] {
            crate::kernels::blocked::image_len(c, h * w)
        } else {
            c * h * w
        }
    }
}

impl Network {
    /// The plan for computing nodes `start..` up to the deepest of `taps` on `h` x `w`
    /// input (`taps` not empty), made on first use.
    pub(super) fn plan(
        &self,
        start: usize,
        h: usize,
        w: usize,
        taps: &[Tap],
    ) -> Result<std::sync::Arc<Plan>> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up without building a key: this runs once per image in a batch.
        let same = |k: &Key| (k.start, k.h, k.w) == (start, h, w) && k.taps == taps;
        if let Some(p) = plans.iter().find(|p| same(&p.key)) {
            return Ok(p.clone());
        }
        let key = Key {
            start,
            h,
            w,
            taps: taps.to_vec(),
        };
        let plan = std::sync::Arc::new(Plan::new(self, key)?);
        if plans.len() >= KEPT {
            plans.remove(0);
        }
        plans.push(plan.clone());
        Ok(plan)
    }
}
