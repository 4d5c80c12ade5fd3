//! Runs the Connect conformance suite (connectconformance v1.0.7, server mode) against
//! `conformance-server`: Connect, gRPC and gRPC-Web; proto and JSON; identity and gzip;
//! unary and server streaming; HTTP/1.1 and h2c (see `conformance.yaml`).
//!
//! Passes when every case passes except those in `known-failing.txt` (which must fail)
//! and `known-flaky.txt` (which may); each entry there says why. The runner comes from
//! `scripts/install-tools.sh`; `CONNECTCONFORMANCE` overrides its path.

use std::{path::PathBuf, process::Command};

#[test]
fn the_server_stack_passes_the_connect_conformance_suite_except_known_tonic_limitations() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runner = std::env::var_os("CONNECTCONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("../../.tools/bin/connectconformance"));
    assert!(
        runner.is_file(),
        "the conformance runner is missing at {}: run scripts/install-tools.sh (or set CONNECTCONFORMANCE)",
        runner.display()
    );
    let output = Command::new(&runner)
        .current_dir(&crate_dir)
        .args(["--mode", "server", "--conf", "conformance.yaml"])
        .args(["--known-failing", "@known-failing.txt", "--known-flaky", "@known-flaky.txt"])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_conformance-server"))
        .output()
        .expect("the conformance runner starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failures: Vec<&str> = stdout.lines().chain(stderr.lines()).filter(|line| line.starts_with("FAILED")).collect();
    // The summary lines ("Total cases", "N passed, M failed") for the test log.
    for line in stdout.lines().chain(stderr.lines()).filter(|line| line.contains("cases") || line.contains("passed")) {
        println!("{line}");
    }
    assert!(
        output.status.success() && failures.is_empty(),
        "conformance failures beyond known-failing.txt:\n{}\n\n{stdout}\n{stderr}",
        failures.join("\n")
    );
}
