//! The zip `torch.save` layout (torch >= 1.6): `<dir>/data.pkl` holds the object, whose
//! persistent ids name storages stored as raw little-endian files `<dir>/data/<key>`.
//!
//! candle's `pickle::read_all` reads this layout too, but refuses strided tensors and
//! non-zero offsets into shared storages, so the same interpreter as the legacy layout is used.

use super::pickle;
use super::torch;
use candle_core::Tensor;
use std::collections::HashMap;
use std::io::{Cursor, Read};

/// Largest `data.pkl` read: a state dict's pickle is about 100 bytes a tensor, so
/// this is hundreds of thousands of tensors.
const MAX_PICKLE: u64 = 64 << 20;

pub fn read(data: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(data))
        .map_err(|e| format!("damaged zip archive (truncated?): {e}"))?;
    let pkl = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or("a zip without data.pkl (not a torch checkpoint)")?;
    let dir = &pkl[..pkl.len() - "data.pkl".len()];
    // Each entry is read up to what it may hold and no further: a deflate bomb stops
    // at its cap instead of filling memory. torch.save stores entries uncompressed,
    // so all of them together may unpack to little more than the file's size; the
    // allowance is generous for archives repacked with compression.
    let allowance = std::cell::Cell::new((data.len() as u64).saturating_mul(32) + (64 << 20));
    let entry = |zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
                 name: &str,
                 cap: u64|
     -> Result<Vec<u8>, String> {
        let f = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        if f.size() > allowance.get() {
            return Err(format!(
                "{name} is {} bytes unpacked, more than 32 times the checkpoint's size \
                 (a zip bomb?)",
                f.size()
            ));
        }
        let cap = cap.min(allowance.get());
        if f.size() > cap {
            return Err(format!(
                "{name} is {} bytes unpacked, more than the {cap} it may hold",
                f.size()
            ));
        }
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{name}: {e}"))?;
        if buf.len() as u64 > cap {
            return Err(format!(
                "{name} unpacks to more than the {cap} bytes it may hold (a zip bomb?)"
            ));
        }
        allowance.set(allowance.get() - buf.len() as u64);
        Ok(buf)
    };
    if zip.index_for_name(&format!("{dir}byteorder")).is_some() {
        let order = entry(&mut zip, &format!("{dir}byteorder"), 16)?;
        if order != b"little" {
            return Err(format!(
                "byte order {:?} (only little-endian is supported)",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let object =
        pickle::load(&entry(&mut zip, &pkl, MAX_PICKLE)?).map_err(|e| format!("{pkl}: {e}"))?;
    let entries = torch::state_dict(&object.value)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    entries
        .into_iter()
        .map(|(name, t)| {
            let key = &t.storage.key;
            if !storages.contains_key(key) {
                // What the storage declares: its elements times their size.
                let cap = (t.storage.numel as u64)
                    .checked_mul(t.storage.dtype.size() as u64)
                    .ok_or_else(|| format!("{name}: storage {key} size overflows"))?;
                let bytes = entry(&mut zip, &format!("{dir}data/{key}"), cap)?;
                storages.insert(key.clone(), bytes);
            }
            let tensor =
                torch::materialize(&t, &storages[key]).map_err(|e| format!("{name}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}
