//! From an unpickled torch object to named tensors: finding the state dict inside whatever
//! `torch.save` was given, and copying each strided storage window into a contiguous tensor.
//!
//! Floating-point tensors (f64, f32, f16, bf16) become f32; integer and bool tensors (such as
//! BatchNorm's `num_batches_tracked`) are kept, as i64, so that no entry silently disappears.

use super::pickle::{StorageDType, StorageRef, TensorRef, Value};
use candle_core::{Device, Tensor};

/// Keys under which training scripts commonly nest the state dict, tried in this order.
const WRAPPER_KEYS: &[&str] = &[
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "network",
    "params",
    "weights",
];

fn tensor_entries(value: &Value) -> Result<Option<Vec<(String, TensorRef)>>, String> {
    let Value::Dict(items, _) = value else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (k, v) in items.iter() {
        if let Value::Tensor(t) = v {
            match k {
                Value::Str(name) => out.push((name.to_string(), (**t).clone())),
                other => {
                    return Err(format!(
                        "a tensor is keyed by {}, not a name",
                        other.describe()
                    ))
                }
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The `(name, tensor)` entries of the state dict in `root`, in the checkpoint's order.
pub fn state_dict(root: &Value) -> Result<Vec<(String, TensorRef)>, String> {
    if let Some(entries) = tensor_entries(root)? {
        return Ok(entries);
    }
    let items = match root {
        Value::Dict(items, _) => items,
        Value::Object(o, _) => {
            return Err(format!(
                "it holds {} (a whole pickled model?), not a state dict; \
                 re-save it with torch.save(model.state_dict(), path)",
                Value::Object(o.clone(), 0).describe()
            ))
        }
        other => return Err(format!("it holds {}, not a state dict", other.describe())),
    };
    let lookup = |key: &str| {
        items
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
            .map(|(_, v)| v)
    };
    for key in WRAPPER_KEYS {
        if let Some(inner) = lookup(key) {
            if let Some(entries) = tensor_entries(inner)? {
                return Ok(entries);
            }
        }
    }
    // Otherwise accept a single nested dict of tensors under any name.
    let mut found = Vec::new();
    for (k, v) in items.iter() {
        if let Some(entries) = tensor_entries(v)? {
            found.push((k.describe(), entries));
        }
    }
    match found.len() {
        1 => Ok(found.pop().unwrap().1),
        0 => {
            let keys: Vec<String> = items.iter().take(10).map(|(k, _)| k.describe()).collect();
            Err(format!(
                "no tensors found in a dict of {} entries (keys: {})",
                items.len(),
                keys.join(", ")
            ))
        }
        _ => {
            let keys: Vec<String> = found.into_iter().map(|(k, _)| k).collect();
            Err(format!(
                "several dicts of tensors ({}); cannot tell which is the model",
                keys.join(", ")
            ))
        }
    }
}

/// Strips DataParallel's `module.` prefix when every name carries it.
pub fn strip_module_prefix<T>(entries: &mut [(String, T)]) {
    if !entries.is_empty() && entries.iter().all(|(n, _)| n.starts_with("module.")) {
        for (n, _) in entries.iter_mut() {
            n.drain(..7);
        }
    }
}

/// Copies the window `t` describes out of `storage` (the raw little-endian bytes of the root
/// storage `t.storage.key`) into a contiguous f32 or i64 tensor.
pub fn materialize(t: &TensorRef, storage: &[u8]) -> Result<Tensor, String> {
    let dtype = t.storage.dtype;
    let esize = dtype.size();
    let available = storage.len() / esize;
    // A legacy view shifts the window and bounds it by the view's size.
    let (base, limit) = match t.storage.view {
        Some((off, len)) => (off, off.checked_add(len).ok_or("storage view overflows")?),
        None => (0, t.storage.numel),
    };
    if limit > available {
        return Err(format!(
            "storage {} holds {available} elements, {limit} needed",
            t.storage.key
        ));
    }
    let count = t
        .size
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or("tensor size overflows")?;
    // A view never has more elements than its storage unless strides overlap (an
    // expanded, stride-0 tensor), which no saved weights need; refusing it bounds
    // what is allocated by what the file holds, before allocating.
    if count > limit - base {
        return Err(format!(
            "tensor of size {:?} (stride {:?}) has {count} elements, more than the {} of \
             storage {}: overlapping views are not weights",
            t.size,
            t.stride,
            limit - base,
            t.storage.key
        ));
    }
    let start = base
        .checked_add(t.offset)
        .ok_or("tensor offset overflows")?;
    if count > 0 {
        // Highest element index the window touches; strides are non-negative in torch.
        let mut last = start;
        for (&s, &st) in t.size.iter().zip(&t.stride) {
            last = (s - 1)
                .checked_mul(st)
                .and_then(|x| x.checked_add(last))
                .ok_or("tensor strides overflow")?;
        }
        if last >= limit {
            return Err(format!(
                "tensor of size {:?}, stride {:?}, offset {} reaches element {last} of storage {} \
                 which has {}",
                t.size,
                t.stride,
                t.offset,
                t.storage.key,
                limit - base
            ));
        }
    }
    let index = element_indices(start, &t.size, &t.stride, count);
    let shape = t.size.clone();
    let at = |i: usize| &storage[i * esize..(i + 1) * esize];
    let tensor = if dtype.is_float() {
        let v: Vec<f32> = index.map(|i| float_at(dtype, at(i))).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    } else {
        let v: Vec<i64> = index.map(|i| int_at(dtype, at(i))).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    };
    tensor.map_err(|e| e.to_string())
}

/// Storage element indices of a strided window in row-major order.
fn element_indices<'a>(
    start: usize,
    size: &'a [usize],
    stride: &'a [usize],
    count: usize,
) -> impl Iterator<Item = usize> + 'a {
    let mut pos = vec![0usize; size.len()];
    let mut cur = start;
    (0..count).map(move |n| {
        if n > 0 {
            // Odometer step: bump the last axis, carrying into earlier ones.
            for d in (0..size.len()).rev() {
                pos[d] += 1;
                cur += stride[d];
                if pos[d] < size[d] {
                    break;
                }
                cur -= stride[d] * size[d];
                pos[d] = 0;
            }
        }
        cur
    })
}

fn float_at(dtype: StorageDType, b: &[u8]) -> f32 {
    match dtype {
        StorageDType::F32 => f32::from_le_bytes(b.try_into().unwrap()),
        StorageDType::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
        StorageDType::F16 => half::f16::from_le_bytes(b.try_into().unwrap()).to_f32(),
        StorageDType::BF16 => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32(),
        _ => unreachable!("float_at on an integer storage"),
    }
}

fn int_at(dtype: StorageDType, b: &[u8]) -> i64 {
    match dtype {
        StorageDType::I64 => i64::from_le_bytes(b.try_into().unwrap()),
        StorageDType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as i64,
        StorageDType::I16 => i16::from_le_bytes(b.try_into().unwrap()) as i64,
        StorageDType::I8 => b[0] as i8 as i64,
        StorageDType::U8 | StorageDType::Bool => b[0] as i64,
        _ => unreachable!("int_at on a float storage"),
    }
}

/// Checks that every storage key names one dtype and size, and returns them by key.
pub fn storage_table(
    storages: &[StorageRef],
) -> Result<std::collections::HashMap<String, StorageRef>, String> {
    let mut table = std::collections::HashMap::new();
    for s in storages {
        let root = StorageRef {
            view: None,
            ..s.clone()
        };
        match table.get(&s.key) {
            None => {
                table.insert(s.key.clone(), root);
            }
            Some(old) if *old == root => {}
            Some(old) => {
                return Err(format!(
                    "storage {} is declared as both {:?}x{} and {:?}x{}",
                    s.key, old.dtype, old.numel, s.dtype, s.numel
                ))
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odometer_walks_a_transposed_window() {
        // A 2x3 row-major matrix viewed transposed: size (3, 2), stride (1, 3).
        let idx: Vec<usize> = element_indices(0, &[3, 2], &[1, 3], 6).collect();
        assert_eq!(idx, [0, 3, 1, 4, 2, 5]);
        let idx: Vec<usize> = element_indices(5, &[2, 2], &[4, 1], 4).collect();
        assert_eq!(idx, [5, 6, 9, 10]);
        let idx: Vec<usize> = element_indices(7, &[], &[], 1).collect();
        assert_eq!(idx, [7]);
    }
}
