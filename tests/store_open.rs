//! Opening a data dir: a file that is not ours, or ours from another format version, is refused
//! with a message saying what it is, and left byte for byte as it was.

use std::path::Path;

use runledger::store::tables::{FORMAT_VERSION, META};
use runledger::store::{DATABASE_FILE, OpenError, Store, StoreOptions};

fn open(dir: &Path) -> Result<Store, OpenError> {
    Store::open(dir, StoreOptions::default())
}

/// Opens, expects a refusal whose message contains `expected`, and checks the file is untouched.
fn refused(dir: &Path, expected: &str) {
    let path = dir.join(DATABASE_FILE);
    let before = std::fs::read(&path).unwrap();
    let error = match open(dir) {
        Ok(_) => panic!("opened a file that should be refused"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(expected), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was changed"
    );
}

/// A redb database holding a `meta` table with the given format marker.
fn redb_with_format(dir: &Path, format: Option<u32>) {
    let db = redb::Database::create(dir.join(DATABASE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        if let Some(format) = format {
            meta.insert("format", format.to_le_bytes().as_slice())
                .unwrap();
        } else {
            meta.insert("something", b"else".as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_text_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), "name,age\nada,36\n").unwrap();
    refused(dir.path(), "not a runledger database");
}

#[test]
fn a_truncated_or_garbled_redb_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    let path = dir.path().join(DATABASE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // Keep the magic number, garble the header and everything after it.
    for byte in bytes.iter_mut().skip(16) {
        *byte = 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    refused(dir.path(), "not a runledger database");
}

#[test]
fn another_programs_redb_database_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    redb_with_format(dir.path(), None);
    refused(dir.path(), "another program");
}

#[test]
fn an_older_and_a_newer_format_are_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    redb_with_format(dir.path(), Some(FORMAT_VERSION - 1));
    refused(dir.path(), "older runledger");
    let dir = tempfile::tempdir().unwrap();
    redb_with_format(dir.path(), Some(FORMAT_VERSION + 1));
    refused(dir.path(), "newer runledger");
}

#[test]
fn a_data_dir_in_use_is_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).unwrap();
    let error = open(dir.path()).err().unwrap().to_string();
    assert!(
        error.contains("in use by another runledger process"),
        "{error}"
    );
    drop(first);
    open(dir.path()).unwrap();
}
