//! `cledger verifier-page`: the file it writes, and its stdout, are the page the server
//! serves at `/verify`.

use std::process::Command;

#[test]
fn verifier_page_writes_the_served_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verifier.html");
    // An existing file is overwritten, not appended to.
    std::fs::write(&path, "stale contents that are longer than nothing").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cledger"))
        .args(["verifier-page", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    let page = ledger_web::verifier_page();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), page);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("({} bytes)", page.len())) && stderr.contains("offline"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_cledger"))
        .arg("verifier-page")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, page.as_bytes());

    // A directory that does not exist: an error naming the path, exit 2.
    let missing = dir.path().join("no/such/dir/verifier.html");
    let out = Command::new(env!("CARGO_BIN_EXE_cledger"))
        .args(["verifier-page", "--out"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir"));
}
