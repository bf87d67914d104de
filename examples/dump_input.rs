//! The network input neurodex makes of each image, for comparing its preprocessing with
//! an independent one (scripts/reference/top9.py inputs).
//!
//!   dump_input MODEL OUT.f32 < PATHS            one path per line
//!   dump_input MODEL OUT.rgb decoded < PATHS    the decoded images instead
//!
//! For each path, in order, writes 3*size*size f32 LE values (CHW, exactly what the
//! network gets, `preprocess::{open_image, prepare}` with MODEL's recipe) to OUT.f32, and
//! one line per path to stdout: `ok W H` (the decoded, oriented size) or `error REASON`
//! (then the values written are NaN). With `decoded`, writes the W*H*3 RGB bytes that
//! `open_image` returns instead (nothing for a file that fails).

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use neurodex::arch;
use neurodex::preprocess::{open_image, prepare, DEFAULT_MAX_PIXELS};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, out, decoded) = match args.as_slice() {
        [m, o] => (m, o, false),
        [m, o, d] if d == "decoded" => (m, o, true),
        _ => anyhow::bail!("usage: dump_input MODEL OUT.f32 [decoded] < PATHS"),
    };
    let recipe = arch::by_name(model)?.recipe;
    let n = 3 * (recipe.size as usize).pow(2);
    let mut file = BufWriter::new(std::fs::File::create(out).with_context(|| out.clone())?);
    let stdout = std::io::stdout();
    let mut report = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let values = match open_image(Path::new(&line), DEFAULT_MAX_PIXELS) {
            Ok(img) => {
                writeln!(report, "ok {} {}", img.width(), img.height())?;
                if decoded {
                    file.write_all(img.as_raw())?;
                    continue;
                }
                prepare(&img, &recipe).0
            }
            Err(e) => {
                writeln!(report, "error {e}")?;
                if decoded {
                    continue;
                }
                vec![f32::NAN; n]
            }
        };
        for v in values {
            file.write_all(&v.to_le_bytes())?;
        }
    }
    file.flush()?;
    Ok(())
}
