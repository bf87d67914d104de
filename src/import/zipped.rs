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
    let entry = |zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str| -> Result<Vec<u8>, String> {
        let mut f = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        // The declared size is only a hint; cap the reservation by the archive size.
        let mut buf = Vec::with_capacity((f.size() as usize).min(data.len()));
        f.read_to_end(&mut buf)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(buf)
    };
    if zip.index_for_name(&format!("{dir}byteorder")).is_some() {
        let order = entry(&mut zip, &format!("{dir}byteorder"))?;
        if order != b"little" {
            return Err(format!(
                "byte order {:?} (only little-endian is supported)",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let object = pickle::load(&entry(&mut zip, &pkl)?).map_err(|e| format!("{pkl}: {e}"))?;
    let entries = torch::state_dict(&object.value)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    entries
        .into_iter()
        .map(|(name, t)| {
            let key = &t.storage.key;
            if !storages.contains_key(key) {
                let bytes = entry(&mut zip, &format!("{dir}data/{key}"))?;
                storages.insert(key.clone(), bytes);
            }
            let tensor =
                torch::materialize(&t, &storages[key]).map_err(|e| format!("{name}: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}
