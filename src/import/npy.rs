//! NumPy `.npy` arrays of f32 or f64 (C order), for exact input tensors
//! (`neurodex forward --input x.npy`).

use std::path::Path;

use crate::{Error, Result};

/// Larger arrays are refused before reading (a 1 GiB input is 80 images at 1024 px).
const MAX_BYTES: u64 = 1 << 30;

/// The array's shape and its values as f32.
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_BYTES {
        return Err(bad(format!("{len} bytes, more than the {MAX_BYTES} read")));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(bad)
}

/// Writes `data` as a little-endian f32 `.npy` array of `shape` (C order), whole or
/// not at all.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy: shape and length differ"
    );
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    crate::output::write(path, &encode("<f4", shape, &raw))
}

/// A version 1.0 `.npy` file of `descr` and `shape` holding `data`, laid out as
/// numpy.save does (the data on a 64-byte boundary).
fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn parse(b: &[u8]) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy version {v}")),
    };
    let header = b
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| -> Option<String> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").ok_or("no descr in the .npy header")?;
    let size = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!(
            "dtype {} (little-endian f4 or f8 are read)",
            &descr[..descr.find(',').unwrap_or(descr.len())]
        ));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("a Fortran-order array (save it C-ordered)".into());
    }
    let shape = field("shape").ok_or("no shape in the .npy header")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("bad shape in the .npy header")?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad dimension {s:?}")))
        .collect::<std::result::Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("too many elements")?;
    let data = &b[start + header_len..];
    if data.len() != count * size {
        return Err(format!(
            "{} bytes of data for shape {dims:?} of {size}-byte values",
            data.len()
        ));
    }
    let values = if size == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Ok((dims, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_and_f64_arrays_are_read_with_their_shape() {
        let f: Vec<u8> = [1.5f32, -2.0, 0.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            parse(&encode("<f4", &[2, 2], &f)).unwrap(),
            (vec![2, 2], vec![1.5, -2.0, 0.0, 4.0])
        );
        let d: Vec<u8> = [0.25f64, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            parse(&encode("<f8", &[2], &d)).unwrap(),
            (vec![2], vec![0.25, 3.0])
        );
        // numpy.save(f, np.array([[1.5, -2], [0, 4]], dtype="<f4")) writes this header.
        let head = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
        assert_eq!(&encode("<f4", &[2, 2], &f)[10..10 + head.len()], head);
        assert_eq!(encode("<f4", &[2, 2], &f).len(), 128 + 16);
    }

    #[test]
    fn other_arrays_are_refused_with_the_reason() {
        let f = [0u8; 16];
        assert!(parse(&encode("<i8", &[2], &f))
            .unwrap_err()
            .contains("dtype"));
        assert!(parse(&encode("<f4", &[3], &f))
            .unwrap_err()
            .contains("bytes of data"));
        assert!(parse(b"PK\x03\x04 not npy").unwrap_err().contains("magic"));
    }
}
