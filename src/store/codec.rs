//! The byte layouts the database's blobs and path columns use: top-K lists (16 bytes
//! a hit), sparse histograms, and paths as the OS's exact bytes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::stats::{Hit, UnitStats, HIST_BINS};
use crate::{Error, Result};

/// Bytes per hit in a top-K blob.
pub const HIT_RECORD: usize = 16;

pub fn encode_hits(hits: &[Hit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hits.len() * HIT_RECORD);
    for h in hits {
        out.extend_from_slice(&h.value.to_le_bytes());
        out.extend_from_slice(&h.image_id.to_le_bytes());
        out.extend_from_slice(&h.y.to_le_bytes());
        out.extend_from_slice(&h.x.to_le_bytes());
    }
    out
}

pub fn decode_hits(blob: &[u8]) -> Result<Vec<Hit>> {
    if !blob.len().is_multiple_of(HIT_RECORD) {
        return Err(Error::Corrupt {
            record: "top-K",
            len: blob.len(),
            unit: HIT_RECORD,
        });
    }
    Ok(blob
        .chunks_exact(HIT_RECORD)
        .map(|r| Hit {
            value: f32::from_le_bytes(r[0..4].try_into().unwrap()),
            image_id: i64::from_le_bytes(r[4..12].try_into().unwrap()),
            y: u16::from_le_bytes([r[12], r[13]]),
            x: u16::from_le_bytes([r[14], r[15]]),
        })
        .collect())
}

/// Sparse encoding: `(u8 bin, u32 LE count)` for every non-empty bin.
pub fn encode_hist(h: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (b, &c) in h.iter().enumerate() {
        if c > 0 {
            out.push(b as u8);
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    out
}

pub fn decode_hist(blob: &[u8]) -> Vec<u32> {
    let mut h = vec![0u32; HIST_BINS];
    for r in blob.chunks_exact(5) {
        if let Some(slot) = h.get_mut(r[0] as usize) {
            *slot = u32::from_le_bytes([r[1], r[2], r[3], r[4]]);
        }
    }
    h
}

/// Raw OS bytes of a path (exact on Unix; elsewhere its UTF-8, lossily).
pub fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().as_bytes().to_vec()
    }
}

/// Inverse of `path_bytes`.
pub fn bytes_path(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

/// Reads `count, nan, sum, sum_sq, min, max, positive, hist` from columns 2..=9.
pub(super) fn read_stats(r: &rusqlite::Row) -> rusqlite::Result<UnitStats> {
    let blob: Vec<u8> = r.get(9)?;
    Ok(UnitStats {
        count: r.get::<_, i64>(2)? as u64,
        nan: r.get::<_, i64>(3)? as u64,
        sum: r.get(4)?,
        sum_sq: r.get(5)?,
        min: r.get::<_, Option<f64>>(6)?.unwrap_or(f64::INFINITY),
        max: r.get::<_, Option<f64>>(7)?.unwrap_or(f64::NEG_INFINITY),
        positive: r.get::<_, i64>(8)? as u64,
        hist: decode_hist(&blob),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_blobs_round_trip() {
        let hits = vec![
            Hit {
                value: 3.5,
                image_id: 1 << 40,
                y: 2,
                x: 7,
            },
            Hit {
                value: -1.0,
                image_id: 3,
                y: 0,
                x: 65535,
            },
        ];
        let blob = encode_hits(&hits);
        assert_eq!(blob.len(), 32);
        assert_eq!(decode_hits(&blob).unwrap(), hits);
        assert!(decode_hits(&blob[..15]).is_err());
    }

    #[test]
    fn stats_merge_like_one_pass_and_survive_the_blob() {
        let xs: Vec<f32> = (0..50).map(|i| (i as f32 - 10.0) * 0.37).collect();
        let mut one = UnitStats::new();
        xs.iter().for_each(|&v| one.add(v));
        let (mut a, mut b) = (UnitStats::new(), UnitStats::new());
        xs[..20].iter().for_each(|&v| a.add(v));
        xs[20..].iter().for_each(|&v| b.add(v));
        a.merge(&b);
        assert_eq!(a.count, 50);
        assert_eq!(a.hist, one.hist);
        assert_eq!(
            (a.min, a.max),
            ((-10.0f32 * 0.37) as f64, (39.0f32 * 0.37) as f64)
        );
        assert!((a.sum - one.sum).abs() < 1e-9);
        // 10 values <= 0 (i = 0..=10 gives -3.7..0; 0 is not positive) -> 11/50.
        assert_eq!(one.positive, 39);
        assert!((one.sparsity().unwrap() - 11.0 / 50.0).abs() < 1e-12);
        assert_eq!(decode_hist(&encode_hist(&one.hist)), one.hist);
    }
}
