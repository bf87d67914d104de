//! Constant folding of the small integer programs torch writes around layers for a
//! fixed input size: `F.pad`'s pads (ConstantOfShape, Concat, Reshape, a Slice with a
//! negative step, Transpose, Cast), and the Reshape/Unsqueeze/Squeeze of shape
//! arithmetic. Only ever on constants; results are capped in size so that a hostile
//! file cannot make one huge.

use std::path::Path;

use onnx_rs::ast::Node as NodeProto;

use super::{attr_int, attr_ints, constant, Constant, Data};

/// The operators folded when every input is a constant.
pub(super) const FOLDED: &[&str] = &[
    "ConstantOfShape",
    "Cast",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Transpose",
    "Slice",
];

/// More elements than shape arithmetic ever needs.
const MAX_ELEMENTS: usize = 1 << 16;

type Res<T> = std::result::Result<T, String>;

/// Node `n` on its constant inputs (`None` for an omitted optional one).
pub(super) fn fold(n: &NodeProto, inputs: &[Option<Constant>]) -> Res<Constant> {
    let input = |k: usize| -> Res<&Constant> {
        inputs
            .get(k)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("input {k} missing"))
    };
    match n.op_type.as_str() {
        "ConstantOfShape" => {
            let dims = sizes(&input(0)?.ints())?;
            let value = match n.attribute.iter().find(|a| a.name == "value") {
                Some(a) => {
                    let t =
                        a.t.as_ref()
                            .ok_or("ConstantOfShape value is not a tensor")?;
                    constant(t, Path::new("."))?
                }
                None => Constant {
                    dims: vec![1],
                    data: Data::F32(vec![0.0]),
                },
            };
            let count = count(&dims)?;
            let data = match value.data {
                Data::F32(v) => Data::F32(vec![*v.first().ok_or("empty value")?; count]),
                Data::I64(v) => Data::I64(vec![*v.first().ok_or("empty value")?; count]),
            };
            Ok(Constant { dims, data })
        }
        "Cast" => {
            let c = input(0)?.clone();
            // TensorProto data types: 1 float, 10/11 half/double; the integers and bool.
            let data = match attr_int(n, "to").ok_or("Cast without `to`")? {
                1 | 10 | 11 | 16 => Data::F32(c.floats()),
                2..=7 | 9 | 12 | 13 => Data::I64(c.ints()),
                t => return Err(format!("Cast to data type {t}")),
            };
            Ok(Constant { dims: c.dims, data })
        }
        "Reshape" => {
            let c = input(0)?;
            let want = input(1)?.ints();
            let total = c.len();
            let mut dims = Vec::with_capacity(want.len());
            let mut infer = None;
            for (k, &d) in want.iter().enumerate() {
                match d {
                    0 => dims.push(*c.dims.get(k).ok_or("Reshape copies a missing axis")?),
                    -1 if infer.is_none() => {
                        infer = Some(k);
                        dims.push(1);
                    }
                    d if d > 0 => dims.push(d as usize),
                    d => return Err(format!("Reshape to {d}")),
                }
            }
            let known = count(&dims)?;
            if let Some(k) = infer {
                if known == 0 || total % known != 0 {
                    return Err(format!("Reshape of {total} elements to {want:?}"));
                }
                dims[k] = total / known;
            }
            if count(&dims)? != total {
                return Err(format!("Reshape of {total} elements to {want:?}"));
            }
            Ok(Constant {
                dims,
                data: c.data.clone(),
            })
        }
        "Unsqueeze" | "Squeeze" => {
            let c = input(0)?;
            let axes = match inputs.get(1).and_then(Option::as_ref) {
                Some(a) => Some(a.ints()),
                None => attr_ints(n, "axes"),
            };
            let dims = if n.op_type.as_str() == "Unsqueeze" {
                let axes = axes.ok_or("Unsqueeze without axes")?;
                let rank = c.dims.len() + axes.len();
                let axes = normalise(&axes, rank)?;
                let mut rest = c.dims.iter();
                (0..rank)
                    .map(|k| {
                        if axes.contains(&k) {
                            1
                        } else {
                            *rest.next().unwrap_or(&1)
                        }
                    })
                    .collect()
            } else {
                let rank = c.dims.len();
                let axes = match axes {
                    Some(a) => normalise(&a, rank)?,
                    None => (0..rank).filter(|&k| c.dims[k] == 1).collect(),
                };
                if axes.iter().any(|&k| c.dims[k] != 1) {
                    return Err(format!("Squeeze of axes {axes:?} of {:?}", c.dims));
                }
                (0..rank)
                    .filter(|k| !axes.contains(k))
                    .map(|k| c.dims[k])
                    .collect()
            };
            Ok(Constant {
                dims,
                data: c.data.clone(),
            })
        }
        "Transpose" => {
            let c = input(0)?;
            let rank = c.dims.len();
            let perm = match attr_ints(n, "perm") {
                Some(p) => normalise(&p, rank)?,
                None => (0..rank).rev().collect(),
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..rank).collect::<Vec<_>>() {
                return Err(format!("Transpose perm {perm:?} of rank {rank}"));
            }
            let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
            let strides = strides(&c.dims);
            let from = indices(&dims, |idx| {
                idx.iter().zip(&perm).map(|(&i, &p)| i * strides[p]).sum()
            });
            Ok(Constant {
                dims,
                data: c.pick(&from),
            })
        }
        "Slice" => {
            let c = input(0)?;
            let rank = c.dims.len();
            // Opset 10 on: starts, ends, axes, steps as inputs; before: attributes.
            let get = |k: usize, attr: &str| -> Option<Vec<i64>> {
                match inputs.get(k).and_then(Option::as_ref) {
                    Some(v) => Some(v.ints()),
                    None if inputs.len() == 1 => attr_ints(n, attr),
                    None => None,
                }
            };
            let starts = get(1, "starts").ok_or("Slice without starts")?;
            let ends = get(2, "ends").ok_or("Slice without ends")?;
            let axes = match get(3, "axes") {
                Some(a) => normalise(&a, rank)?,
                None => normalise(&(0..starts.len() as i64).collect::<Vec<_>>(), rank)?,
            };
            let steps = get(4, "steps").unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("Slice with starts, ends, axes and steps of different lengths".into());
            }
            // Per axis: the first index taken and the step; the count taken.
            let mut first: Vec<i64> = vec![0; rank];
            let mut step: Vec<i64> = vec![1; rank];
            let mut dims = c.dims.clone();
            for k in 0..starts.len() {
                let (ax, s) = (axes[k], steps[k]);
                let d = c.dims[ax] as i64;
                if s == 0 || s == i64::MIN {
                    return Err(format!("Slice with a step of {s}"));
                }
                let at = |v: i64| if v < 0 { v + d } else { v };
                let (lo, hi) = if s > 0 { (0, d) } else { (-1, d - 1) };
                let b = at(starts[k].clamp(-d - 1, d)).clamp(lo, hi);
                let e = at(ends[k].clamp(-d - 1, d)).clamp(lo, hi);
                let n = if s > 0 {
                    (e - b).max(0).saturating_add(s - 1) / s
                } else {
                    (b - e).max(0).saturating_add(-s - 1) / -s
                };
                first[ax] = b;
                step[ax] = s;
                dims[ax] = n as usize;
            }
            let strides = strides(&c.dims);
            let from = indices(&dims, |idx| {
                (0..rank)
                    .map(|k| (first[k] + idx[k] as i64 * step[k]) as usize * strides[k])
                    .sum()
            });
            Ok(Constant {
                dims,
                data: c.pick(&from),
            })
        }
        op => Err(format!("{op} is not folded")),
    }
}

impl Constant {
    fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    fn pick(&self, from: &[usize]) -> Data {
        match &self.data {
            Data::F32(v) => Data::F32(from.iter().map(|&i| v[i]).collect()),
            Data::I64(v) => Data::I64(from.iter().map(|&i| v[i]).collect()),
        }
    }
}

fn sizes(v: &[i64]) -> Res<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
        .collect()
}

fn count(dims: &[usize]) -> Res<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_ELEMENTS)
        .ok_or_else(|| {
            format!("a constant of shape {dims:?} (at most {MAX_ELEMENTS} elements are folded)")
        })
}

/// Axes with negatives counted from the end, each within `rank`.
fn normalise(axes: &[i64], rank: usize) -> Res<Vec<usize>> {
    axes.iter()
        .map(|&a| {
            let k = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(k)
                .ok()
                .filter(|&k| k < rank)
                .ok_or_else(|| format!("axis {a} of rank {rank}"))
        })
        .collect()
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

/// `at(index)` for every multi-index of `dims` in row-major order.
fn indices(dims: &[usize], at: impl Fn(&[usize]) -> usize) -> Vec<usize> {
    let total: usize = dims.iter().product();
    let mut idx = vec![0; dims.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        out.push(at(&idx));
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], v: &[i64]) -> Option<Constant> {
        Some(Constant {
            dims: dims.to_vec(),
            data: Data::I64(v.to_vec()),
        })
    }

    fn node(op: &'static str) -> NodeProto<'static> {
        NodeProto {
            op_type: op.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_pads_of_f_pad_fold_to_onnx_order() {
        // F.pad(x, (1, 2, 0, 1)) as torch 1.13 writes it: [1, 2, 0, 1] padded with
        // zeros to 8, reshaped to [-1, 2], reversed along axis 0, transposed, flattened.
        let zeros = fold(&node("ConstantOfShape"), &[ints(&[1], &[4])]).unwrap();
        let mut all = vec![1, 2, 0, 1];
        all.extend(zeros.ints());
        let pairs = fold(&node("Reshape"), &[ints(&[8], &all), ints(&[2], &[-1, 2])]).unwrap();
        assert_eq!(pairs.dims, [4, 2]);
        let rev = fold(
            &node("Slice"),
            &[
                Some(pairs),
                ints(&[1], &[-1]),
                ints(&[1], &[i64::MIN + 1]),
                ints(&[1], &[0]),
                ints(&[1], &[-1]),
            ],
        )
        .unwrap();
        assert_eq!(rev.ints(), [0, 0, 0, 0, 0, 1, 1, 2]);
        let t = fold(&node("Transpose"), &[Some(rev)]).unwrap();
        assert_eq!(t.dims, [2, 4]);
        let flat = fold(&node("Reshape"), &[Some(t), ints(&[1], &[-1])]).unwrap();
        // ONNX Pad: all begins (N, C, H, W), then all ends: top 0, left 1, bottom 1, right 2.
        assert_eq!(flat.ints(), [0, 0, 0, 1, 0, 0, 1, 2]);
    }

    #[test]
    fn slices_clamp_and_step() {
        let c = ints(&[6], &[0, 1, 2, 3, 4, 5]);
        let s = |b: i64, e: i64, st: i64| {
            fold(
                &node("Slice"),
                &[
                    c.clone(),
                    ints(&[1], &[b]),
                    ints(&[1], &[e]),
                    None,
                    ints(&[1], &[st]),
                ],
            )
            .unwrap()
            .ints()
        };
        assert_eq!(s(1, 100, 2), [1, 3, 5]);
        assert_eq!(s(-2, 6, 1), [4, 5]);
        assert_eq!(s(4, 0, -2), [4, 2]);
        assert_eq!(s(5, -100, -1), [5, 4, 3, 2, 1, 0]);
        assert_eq!(s(3, 3, 1), Vec::<i64>::new());
        // More starts than axes, and a step that cannot be negated: refused, no panic.
        let e = fold(
            &node("Slice"),
            &[c.clone(), ints(&[2], &[0, 0]), ints(&[2], &[1, 1])],
        )
        .unwrap_err();
        assert!(e.contains("axis 1 of rank 1"), "{e}");
        let e = fold(
            &node("Slice"),
            &[
                c.clone(),
                ints(&[1], &[0]),
                ints(&[1], &[1]),
                None,
                ints(&[1], &[i64::MIN]),
            ],
        )
        .unwrap_err();
        assert!(e.contains("step"), "{e}");
    }

    #[test]
    fn hostile_sizes_are_refused() {
        let e = fold(&node("ConstantOfShape"), &[ints(&[2], &[1 << 40, 1 << 40])]).unwrap_err();
        assert!(e.contains("at most"), "{e}");
        let e = fold(&node("ConstantOfShape"), &[ints(&[1], &[-3])]).unwrap_err();
        assert!(e.contains("dimension -3"), "{e}");
    }
}
