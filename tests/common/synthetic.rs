//! An index of made-up peaks, written through the store as `index` writes one: the
//! concept tests plant detectors in it, and the concept benchmark fills it with
//! 50,000 images.

use std::path::Path;

use neurodex::arch::Act;
use neurodex::peaks::Peak;
use neurodex::receptive::Field;
use neurodex::store::{ImageRecord, LayerInfo, RunInfo, Store};

/// Image `i`'s path in the synthetic index.
pub fn path(i: usize) -> String {
    format!("img/{i:06}.jpg")
}

/// Writes `db` with `images` images (`img/000000.jpg`, ...) under `root` and the
/// layers `(name, channels)`, each unit's peak on image `i` given by
/// `value(i, layer, unit)`.
pub fn build(
    db: &Path,
    root: &Path,
    layers: &[(&str, usize)],
    images: usize,
    value: impl Fn(usize, usize, usize) -> f32,
) -> Store {
    let mut store = Store::open(db).expect("open the synthetic index");
    let infos: Vec<LayerInfo> = layers
        .iter()
        .enumerate()
        .map(|(i, &(name, channels))| LayerInfo {
            id: i as i64,
            name: name.into(),
            node: i + 1,
            channels,
            height: 7,
            width: 7,
            field: Field::PIXEL,
            pre: true,
            act: Act::None,
        })
        .collect();
    let run = RunInfo {
        model: "synthetic".into(),
        weights_id: "0".repeat(64),
        root: root.to_path_buf(),
        recipe: "{}".into(),
        max_pixels: 1 << 30,
        top_k: 16,
        tool_version: "test".into(),
        created_at: 0,
        layers: layers.iter().map(|l| l.0.to_string()).collect(),
        keep_duplicates: false,
        needs_rebuild: false,
        derived_upto: 0,
        shard: None,
        batch: None,
    };
    store.create_run(&run, &infos).expect("create the run");
    for chunk in (0..images).collect::<Vec<_>>().chunks(2000) {
        let b = store.begin().expect("begin");
        for &i in chunk {
            let p = path(i);
            let sha = format!("{i:064}");
            let id = b
                .upsert_image(&ImageRecord {
                    path_raw: p.as_bytes(),
                    path: &p,
                    size: Some(1),
                    mtime_ns: Some(0),
                    sha256: Some(&sha),
                    width: Some(224),
                    height: Some(224),
                    transform: None,
                    status: "ok",
                    error_kind: None,
                    error: None,
                })
                .expect("an image row");
            for (l, &(_, channels)) in layers.iter().enumerate() {
                let peaks: Vec<Peak> = (0..channels)
                    .map(|u| Peak {
                        value: value(i, l, u),
                        y: 0,
                        x: 0,
                    })
                    .collect();
                b.put_peaks(id, l as i64, &peaks).expect("peaks");
            }
        }
        b.commit().expect("commit");
    }
    store
}
