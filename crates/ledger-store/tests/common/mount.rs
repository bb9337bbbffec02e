//! Mounting a small filesystem for storage-fault tests (needs root). Shared with the
//! end-to-end tests of the `cledger` crate, which include this file by path.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounts (lazily) when dropped, so a failing test leaves no mount behind.
pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `mount ARGS DIR`; the error is mount's own message.
pub fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
