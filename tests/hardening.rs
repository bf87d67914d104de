//! What an unlucky user or an attacker does to a database and its outputs: two
//! writers at once, read-only media, a run cut short, links in the output folder,
//! an empty file given as the database, a bad weights file, a full disk.

mod common;

use std::path::Path;
use std::process::Command;

use common::{photo_folder, run};
use neurodex::store::Store;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn top_json(db: &Path, layer: &str, unit: usize) -> serde_json::Value {
    let (code, out, err) = run(&[
        "top".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--layer".as_ref(),
        layer.as_ref(),
        "--unit".as_ref(),
        unit.to_string().as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "top failed: {err}");
    json(&out)
}

fn paths(top: &serde_json::Value) -> Vec<String> {
    top["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect()
}

fn index(dir: &Path, db: &Path) -> (i32, String) {
    let (code, _, err) = run(&[
        "index".as_ref(),
        dir.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
        "-q".as_ref(),
    ]);
    (code, err)
}

#[test]
fn one_writer_at_a_time_the_second_is_refused_by_name_and_readers_go_on() {
    let photos = photo_folder(3);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    assert_eq!(index(photos.path(), &db).0, 0);
    let before = top_json(&db, "stem", 3);

    // This process is the writer now, as a running `index` would be.
    let writer = Store::open(&db).unwrap();
    let (code, err) = index(photos.path(), &db);
    assert_eq!(
        code, 3,
        "a second writer must be refused with exit 3: {err}"
    );
    assert!(
        err.contains("another neurodex is writing")
            && err.contains(&format!("pid {}", std::process::id())),
        "the refusal names the holder: {err}"
    );
    let during = top_json(&db, "stem", 3);
    assert_eq!(paths(&during), paths(&before), "readers are not held up");
    assert_eq!(during["index"]["state"], "building");

    drop(writer);
    let (code, err) = index(photos.path(), &db);
    assert_eq!(code, 0, "free again once the writer is gone: {err}");
}

/// A read-only bind mount of `src` (root, where mounts are allowed), or `src` made
/// read-only (others); `None` where neither can be had, after saying SKIPPED.
fn read_only_copy(src: &Path, at: &Path) -> Option<Box<dyn FnOnce()>> {
    std::fs::create_dir_all(at).unwrap();
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root {
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let (s, a) = (src.to_str().unwrap(), at.to_str().unwrap());
        if ok(&["--bind", s, a]) {
            if ok(&["-o", "remount,ro,bind", a]) {
                let a = a.to_string();
                return Some(Box::new(move || {
                    let _ = Command::new("umount").arg(&a).status();
                }));
            }
            let _ = Command::new("umount").arg(a).status();
        }
        eprintln!(
            "SKIPPED read-only storage: running as root and `mount -o ro,bind` is not allowed here"
        );
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), at.join(e.file_name())).unwrap();
        std::fs::set_permissions(
            at.join(e.file_name()),
            std::fs::Permissions::from_mode(0o444),
        )
        .unwrap();
    }
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o555)).unwrap();
    let at = at.to_path_buf();
    Some(Box::new(move || {
        let _ = std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755));
    }))
}

#[test]
fn a_database_on_read_only_storage_answers_queries() {
    let photos = photo_folder(3);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let db = src.join("r.db");
    assert_eq!(index(photos.path(), &db).0, 0);
    let expected = paths(&top_json(&db, "stem", 3));
    let ro = tmp.path().join("ro");
    let Some(undo) = read_only_copy(&src, &ro) else {
        return;
    };
    let ro_db = ro.join("r.db");
    let result = std::panic::catch_unwind(|| {
        assert_eq!(paths(&top_json(&ro_db, "stem", 3)), expected);
        for args in [
            vec!["stats", "--db"],
            vec!["units", "--layer", "stem", "--db"],
        ] {
            let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
            a.push(ro_db.as_os_str());
            let (code, _, err) = run(&a);
            assert_eq!(code, 0, "{args:?} on read-only storage: {err}");
        }
    });
    undo();
    result.unwrap();
}

#[test]
fn top_ranks_what_the_saved_top_k_lacks_and_the_next_index_makes_it_whole() {
    let photos = photo_folder(6);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    assert_eq!(index(photos.path(), &db).0, 0);
    let whole = top_json(&db, "blocks.4", 5);
    assert_eq!(whole["index"]["state"], "complete");
    assert_eq!(paths(&whole).len(), 6);
    let saved = |db: &Path| -> (i64, i64) {
        common::raw_db(db)
            .query_row(
                "SELECT (SELECT count(*) FROM top_k), (SELECT count(*) FROM unit_stats)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let full = saved(&db);

    // What a run killed (or stopped by a full disk) before its first save leaves:
    // image rows and peaks committed, no statistics or top-K yet, no finish time.
    {
        common::raw_db(&db)
            .execute_batch(
                "DELETE FROM top_k; DELETE FROM unit_stats; UPDATE run SET derived_upto = 0;
                 UPDATE session SET finished_at = NULL;",
            )
            .unwrap();
    }
    let cut = top_json(&db, "blocks.4", 5);
    assert_eq!(cut["index"]["state"], "cut-short");
    assert_eq!(cut["index"]["pending"], 6);
    assert_eq!(
        paths(&cut),
        paths(&whole),
        "the images the saved top-K lacks are ranked from their peaks"
    );
    let (_, _, err) = run(&[
        "top".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--layer".as_ref(),
        "blocks.4".as_ref(),
        "--unit".as_ref(),
        "5".as_ref(),
    ]);
    assert!(err.contains("stopped before its end"), "{err}");

    assert_eq!(index(photos.path(), &db).0, 0);
    assert_eq!(saved(&db), full, "the next index saves every unit again");
    let again = top_json(&db, "blocks.4", 5);
    assert_eq!(again["index"]["state"], "complete");
    assert_eq!(paths(&again), paths(&whole));
}

#[test]
fn gallery_replaces_links_in_its_folder_and_never_writes_through_them() {
    let photos = photo_folder(2);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    assert_eq!(index(photos.path(), &db).0, 0);
    let out = tmp.path().join("g");
    std::fs::create_dir(&out).unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("style.css")).unwrap();
    let gallery = |out: &Path| {
        run(&[
            "gallery".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--layers".as_ref(),
            "stem".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
    };
    let (code, _, err) = gallery(&out);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let meta = std::fs::symlink_metadata(out.join("style.css")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by the page's file"
    );

    // A linked subfolder would take files elsewhere: refused by name.
    let out2 = tmp.path().join("g2");
    std::fs::create_dir(&out2).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out2.join("units")).unwrap();
    let (code, _, err) = gallery(&out2);
    assert_eq!(code, 2);
    assert!(
        err.contains("units") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn an_empty_file_given_as_the_database_is_called_empty_not_old() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("empty.db");
    std::fs::write(&db, b"").unwrap();
    let (code, _, err) = run(&["stats".as_ref(), "--db".as_ref(), db.as_os_str()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("empty file") && !err.contains("older"),
        "{err}"
    );
}

#[test]
fn a_bad_weights_file_or_a_missing_folder_leaves_no_database() {
    let photos = photo_folder(1);
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.pth");
    std::fs::write(&junk, b"PK\x03\x04 not really a checkpoint").unwrap();
    let db = tmp.path().join("w.db");
    let (code, _, err) = run(&[
        "index".as_ref(),
        photos.path().as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
        "--weights".as_ref(),
        junk.as_os_str(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("junk.pth"), "{err}");
    assert!(
        !db.exists(),
        "a failed --weights load left {}",
        db.display()
    );

    let (code, _, err) = run(&[
        "index".as_ref(),
        photos.path().join("no-such-folder").as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!db.exists(), "a missing folder left {}", db.display());
}

#[test]
fn top_on_a_full_disk_leaves_no_partial_picture() {
    let photos = photo_folder(4);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    assert_eq!(index(photos.path(), &db).0, 0);
    // An 8 KiB file system: room for the directory, not for a grid.
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let mounted = unsafe { libc::geteuid() } == 0
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"])
            .arg(&full)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED full disk: needs root and a tmpfs mount to make a small file system");
        return;
    }
    let grid = full.join("grid.png");
    let (code, _, err) = run(&[
        "top".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--layer".as_ref(),
        "stem".as_ref(),
        "--unit".as_ref(),
        "3".as_ref(),
        "-o".as_ref(),
        grid.as_os_str(),
    ]);
    let left: Vec<_> = std::fs::read_dir(&full)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = Command::new("umount").arg(&full).status();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("grid.png"), "the error names the file: {err}");
    assert!(left.is_empty(), "left behind on the full disk: {left:?}");
}
