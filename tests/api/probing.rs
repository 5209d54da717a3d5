//! Regressions of hostile probing of the fronts and commands (issue 20's list): each test
//! failed before its fix.

use crate::helpers::{ORG, run_cli};

/// An import line of one finished task run.
fn import_line(task_run: u128, duration: u32) -> String {
    format!(
        r#"{{"task_run_uuid":"{}","pipeline_run_uuid":"{}","pipeline_uuid":"0c000000-0000-4000-8000-000000000001","task_uuid":"0c000000-0000-4000-8000-000000000002","task_type":"query","organization_uuid":"{ORG}","is_successful":true,"duration":{duration},"executed_at":"2024-01-01 00:00:00"}}"#,
        uuid::Uuid::from_u128(task_run),
        uuid::Uuid::from_u128(task_run + 1000),
    )
}

#[test]
fn import_rejects_a_line_that_is_not_utf8_and_imports_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.ndjson");
    // A byte order mark, a line, a line that is not UTF-8, and a line after it.
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(import_line(1, 10).as_bytes());
    bytes.extend_from_slice(b"\n{\"task_run_uuid\": \"\xff\xfe\"}\n");
    bytes.extend_from_slice(import_line(2, 20).as_bytes());
    bytes.push(b'\n');
    std::fs::write(&file, bytes).unwrap();
    let data = dir.path().join("data");
    let (ok, output) = run_cli(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(!ok, "a rejected line makes the import fail: {output}");
    assert!(
        output.contains("runs.ndjson:2: the line is not valid UTF-8"),
        "{output}"
    );
    assert!(output.contains("2 imported"), "{output}");
    assert!(
        !output.contains("runs.ndjson:1:"),
        "the byte order mark is dropped: {output}"
    );
    assert!(!output.contains("runs.ndjson:3:"), "{output}");
}
