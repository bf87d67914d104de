//! Per-image peaks: for every unit (channel) of a layer, its highest activation on
//! one image and where it occurs. This is the one number per image per unit the index
//! keeps, stored compactly as a blob of `(f32 value, u16 y, u16 x)` records.

use crate::model::{Activation, TapPeaks};
use crate::{Error, Result};

/// Bytes per unit in a peaks blob.
pub const RECORD: usize = 8;

/// One unit's peak on one image. `value` is NaN when the unit's map held only NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    pub value: f32,
    pub y: u16,
    pub x: u16,
}

/// The peaks of every unit of `act`, per image: `result[i][c]`.
///
/// Positions are stored as u16, which bounds feature maps to 65535 cells a side.
pub fn of_activation(act: &Activation) -> Result<Vec<Vec<Peak>>> {
    check_size(act.h, act.w)?;
    of_tap(&TapPeaks::of(act))
}

/// The peaks `Network::forward_peaks` found, per image: `result[i][c]`.
pub fn of_tap(t: &TapPeaks) -> Result<Vec<Vec<Peak>>> {
    check_size(t.h, t.w)?;
    let w = t.w.max(1) as u32;
    Ok(t.values
        .chunks(t.c.max(1))
        .zip(t.at.chunks(t.c.max(1)))
        .take(t.n)
        .map(|(vs, is)| {
            vs.iter()
                .zip(is)
                .map(|(&value, &i)| Peak {
                    value,
                    y: (i / w) as u16,
                    x: (i % w) as u16,
                })
                .collect()
        })
        .collect())
}

fn check_size(h: usize, w: usize) -> Result<()> {
    if h > u16::MAX as usize + 1 || w > u16::MAX as usize + 1 {
        return Err(Error::Shape(format!(
            "feature map {h}x{w} is too large to index"
        )));
    }
    Ok(())
}

/// Serialises peaks as little-endian `(f32, u16, u16)` records.
pub fn encode(peaks: &[Peak]) -> Vec<u8> {
    let mut out = Vec::with_capacity(peaks.len() * RECORD);
    for p in peaks {
        out.extend_from_slice(&p.value.to_le_bytes());
        out.extend_from_slice(&p.y.to_le_bytes());
        out.extend_from_slice(&p.x.to_le_bytes());
    }
    out
}

/// The values alone of a blob written by `encode`, without allocating; `None` when
/// its length is not whole records.
pub fn values(blob: &[u8]) -> Option<impl Iterator<Item = f32> + '_> {
    blob.len().is_multiple_of(RECORD).then(|| {
        blob.chunks_exact(RECORD)
            .map(|r| f32::from_le_bytes([r[0], r[1], r[2], r[3]]))
    })
}

/// Reads a blob written by `encode`.
pub fn decode(blob: &[u8]) -> Result<Vec<Peak>> {
    if !blob.len().is_multiple_of(RECORD) {
        return Err(Error::Corrupt {
            record: "peaks",
            len: blob.len(),
            unit: RECORD,
        });
    }
    Ok(blob
        .chunks_exact(RECORD)
        .map(|r| Peak {
            value: f32::from_le_bytes([r[0], r[1], r[2], r[3]]),
            y: u16::from_le_bytes([r[4], r[5]]),
            x: u16::from_le_bytes([r[6], r[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_are_per_image_per_channel_with_row_major_position() {
        // n=2, c=2, 2x3 maps.
        #[rustfmt::skip]
        let data = vec![
            0.0, 1.0, 2.0,  3.0, 9.0, 4.0,    // image 0, unit 0: max 9 at (1, 1)
            -5.0, -4.0, -1.0, -3.0, -2.0, -6.0, // image 0, unit 1: max -1 at (0, 2)
            7.0, 0.0, 0.0,  0.0, 0.0, 7.0,    // image 1, unit 0: tie, first wins (0, 0)
            f32::NAN, 1.0, f32::NAN, 0.5, 0.0, 0.0, // image 1, unit 1: NaN ignored, (0, 1)
        ];
        let act = Activation {
            n: 2,
            c: 2,
            h: 2,
            w: 3,
            data,
        };
        let p = of_activation(&act).unwrap();
        assert_eq!(
            p[0][0],
            Peak {
                value: 9.0,
                y: 1,
                x: 1
            }
        );
        assert_eq!(
            p[0][1],
            Peak {
                value: -1.0,
                y: 0,
                x: 2
            }
        );
        assert_eq!(
            p[1][0],
            Peak {
                value: 7.0,
                y: 0,
                x: 0
            }
        );
        assert_eq!(
            p[1][1],
            Peak {
                value: 1.0,
                y: 0,
                x: 1
            }
        );
    }

    #[test]
    fn blobs_round_trip_and_have_a_fixed_layout() {
        let peaks = [
            Peak {
                value: 1.5,
                y: 3,
                x: 65535,
            },
            Peak {
                value: -0.0,
                y: 0,
                x: 1,
            },
        ];
        let blob = encode(&peaks);
        assert_eq!(&blob[..8], &[0, 0, 0xc0, 0x3f, 3, 0, 0xff, 0xff]);
        assert_eq!(decode(&blob).unwrap(), peaks);
        assert!(decode(&blob[..7]).is_err());
    }
}
