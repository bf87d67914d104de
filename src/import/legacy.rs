//! The legacy (pre-1.6, non-zip) `torch.save` layout: five pickles back to back -- the magic
//! number, the protocol version, system info, the object itself (tensors point at storages by
//! persistent id), the list of storage keys -- then each storage in that order as a u64
//! element count followed by its raw little-endian elements.

use super::pickle::{self, Value};
use super::torch;
use candle_core::Tensor;
use std::collections::HashMap;

/// 0x1950a86a20f9469cfc6c as pickled by protocol 2: PROTO 2, LONG1 of 10 bytes, STOP.
pub const HEADER: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// The only legacy protocol version torch ever wrote.
const PROTOCOL_VERSION: i64 = 1001;

pub fn read(data: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    if !data.starts_with(&HEADER) {
        return Err("missing the legacy torch magic number".into());
    }
    let mut pos = HEADER.len();
    let mut next = |what: &str| -> Result<pickle::Pickle, String> {
        let p = pickle::load(&data[pos..]).map_err(|e| format!("{what}: {e}"))?;
        pos += p.len;
        Ok(p)
    };
    match next("protocol version")?.value {
        Value::Int(PROTOCOL_VERSION) => {}
        other => {
            return Err(format!(
                "unknown legacy protocol version {}",
                other.describe()
            ))
        }
    }
    let sys_info = next("system info")?.value;
    if let Value::Dict(items, _) = &sys_info {
        let little = items
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == "little_endian"));
        if let Some((_, Value::Bool(false))) = little {
            return Err("written on a big-endian machine (not supported)".into());
        }
    }
    let object = next("state dict")?;
    let keys = match next("storage key list")?.value {
        Value::List(keys, _) => keys
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.to_string()),
                other => Err(format!("storage key is {}", other.describe())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(format!("storage key list is {}", other.describe())),
    };
    let table = torch::storage_table(&object.storages)?;

    // Storages follow in key order; each is sliced out of `data` without copying.
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for key in &keys {
        let s = table
            .get(key)
            .ok_or_else(|| format!("storage {key} is listed but never used"))?;
        let head = data
            .get(pos..pos + 8)
            .ok_or_else(|| format!("truncated before storage {key} at byte {pos}"))?;
        let numel = u64::from_le_bytes(head.try_into().unwrap());
        if numel != s.numel as u64 {
            return Err(format!(
                "storage {key} at byte {pos} has {numel} elements, its tensors say {}",
                s.numel
            ));
        }
        pos += 8;
        let nbytes = s.numel.saturating_mul(s.dtype.size());
        let bytes = data[pos..].get(..nbytes).ok_or_else(|| {
            format!(
                "truncated in storage {key}: {nbytes} bytes needed at byte {pos}, {} left",
                data.len() - pos
            )
        })?;
        storages.insert(key, bytes);
        pos += nbytes;
    }

    let entries = torch::state_dict(&object.value)?;
    entries
        .into_iter()
        .map(|(name, t)| {
            let bytes = storages
                .get(t.storage.key.as_str())
                .ok_or_else(|| format!("{name}: storage {} is missing", t.storage.key))?;
            let tensor = torch::materialize(&t, bytes).map_err(|e| format!("{name}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}
