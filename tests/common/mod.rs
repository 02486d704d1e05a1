//! Helpers shared by the integration tests.

use std::process::Command;

/// Run the `rgshield` binary: (success, stdout, stderr).
pub fn rgshield(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rgshield"))
        .args(args)
        .output()
        .expect("run rgshield");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
