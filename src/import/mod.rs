//! Reading trained weights: PyTorch checkpoints (the legacy pre-1.6 layout and the zip layout)
//! and safetensors, into named tensors; and `neurodex import`, which writes them as safetensors.
//!
//! The format is told by the file's first bytes, not its name. Floating-point tensors come out
//! as f32; integer tensors (BatchNorm's `num_batches_tracked`) are kept as i64, so that the
//! tensor and number counts match the checkpoint's. A state dict wrapped in a dict (under
//! `state_dict`, `model`, ...) is found, and DataParallel's `module.` prefix is stripped.

mod legacy;
pub mod npy;
pub mod onnx;
mod pickle;
mod torch;
mod zipped;

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// The on-disk layouts `read_checkpoint` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `torch.save(..., _use_new_zipfile_serialization=False)` and torch < 1.6.
    TorchLegacy,
    /// `torch.save` since torch 1.6.
    TorchZip,
    Safetensors,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::TorchLegacy => "torch-legacy",
            Format::TorchZip => "torch-zip",
            Format::Safetensors => "safetensors",
        })
    }
}

/// What `import` read and wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    pub format: Format,
    pub tensors: usize,
    /// Total elements over all tensors, integer ones included.
    pub numbers: usize,
}

/// Tells the format from the first bytes of a file.
pub fn detect(data: &[u8]) -> Option<Format> {
    if data.starts_with(&legacy::HEADER) {
        return Some(Format::TorchLegacy);
    }
    if data.starts_with(b"PK\x03\x04") {
        return Some(Format::TorchZip);
    }
    // safetensors: u64 header length, then a JSON object that fits in the file.
    if data.len() >= 10 && data[8] == b'{' {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        if n >= 2 && n <= (data.len() - 8) as u64 {
            return Some(Format::Safetensors);
        }
    }
    None
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads every tensor of a checkpoint, in the file's order (safetensors: by name).
pub fn read_checkpoint(path: &Path) -> Result<Vec<(String, Tensor)>> {
    read_with_format(path).map(|(_, tensors)| tensors)
}

fn read_with_format(path: &Path) -> Result<(Format, Vec<(String, Tensor)>)> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = detect(&data).ok_or_else(|| bad(path, unknown_reason(&data)))?;
    let read = match format {
        Format::TorchLegacy => legacy::read(&data),
        Format::TorchZip => zipped::read(&data),
        Format::Safetensors => read_safetensors(&data),
    };
    let mut tensors = read.map_err(|reason| bad(path, reason))?;
    if tensors.is_empty() {
        return Err(bad(path, "it holds no tensors"));
    }
    torch::strip_module_prefix(&mut tensors);
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &tensors {
        if !seen.insert(name.as_str()) {
            return Err(bad(path, format!("tensor name {name:?} appears twice")));
        }
    }
    Ok((format, tensors))
}

fn unknown_reason(data: &[u8]) -> String {
    if data.is_empty() {
        return "the file is empty".into();
    }
    let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let hint = if data.starts_with(b"\xff\xd8\xff") {
        " (a JPEG image)"
    } else if data.starts_with(b"\x89PNG") {
        " (a PNG image)"
    } else if data.starts_with(b"\x80") {
        " (a pickle, but not one written by torch.save)"
    } else {
        ""
    };
    format!(
        "not a PyTorch checkpoint (legacy or zip) nor safetensors: it starts with {}{hint}",
        head.join(" ")
    )
}

/// Checks what the safetensors loader lets through: the header's length against the
/// file, and each tensor name once (a JSON object may repeat a key, and the loader
/// keeps the last silently). Offsets, shapes and dtypes are the loader's to check.
pub(crate) fn check_safetensors(data: &[u8]) -> Result<(), String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    let n = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("bad safetensors: shorter than its 8-byte header length")?;
    let header = usize::try_from(n)
        .ok()
        .and_then(|n| data.get(8..8usize.checked_add(n)?))
        .ok_or_else(|| {
            format!(
                "bad safetensors: a header of {n} bytes in a file of {}",
                data.len()
            )
        })?;
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of tensors")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(name.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "tensor name {name:?} appears twice"
                    )));
                }
            }
            Ok(())
        }
    }
    serde_json::Deserializer::from_slice(header)
        .deserialize_map(Unique)
        .map_err(|e| format!("bad safetensors header: {e}"))
}

fn read_safetensors(data: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    check_safetensors(data)?;
    let map = candle_core::safetensors::load_buffer(data, &Device::Cpu)
        .map_err(|e| format!("bad safetensors: {e}"))?;
    let mut tensors = map
        .into_iter()
        .map(|(name, t)| {
            let dtype = if t.dtype().is_float() {
                DType::F32
            } else {
                DType::I64
            };
            let t = t.to_dtype(dtype).map_err(|e| format!("{name}: {e}"))?;
            Ok((name, t))
        })
        .collect::<Result<Vec<_>, String>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Converts a checkpoint to safetensors at `output`: f32 (integers as i64), names kept. The
/// same input always gives the same bytes (the writer orders tensors by dtype, then name).
pub fn import(input: &Path, output: &Path) -> Result<ImportSummary> {
    let (format, tensors) = read_with_format(input)?;
    let summary = ImportSummary {
        format,
        tensors: tensors.len(),
        numbers: tensors.iter().map(|(_, t)| t.elem_count()).sum(),
    };
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    // Write beside the target and rename, so a failed import never leaves half a file.
    let tmp = output.with_extension("safetensors.part");
    candle_core::safetensors::save(&map, &tmp).map_err(|cause| Error::SaveWeights {
        path: tmp.clone(),
        cause,
    })?;
    std::fs::rename(&tmp, output).map_err(|e| Error::io(output, e))?;
    Ok(summary)
}
