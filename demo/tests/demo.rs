//! `make demo DEMO_ARGS=--once` works: the scripted demo runs to its summary
//! and exits 0, on the embedded SQLite store.

use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn the_scripted_demo_switches_over_fails_over_and_exits_0() -> anyhow::Result<()> {
    let binary = env!("CARGO_BIN_EXE_demo");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .arg("--once")
            .env_remove("DATABASE_URL")
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(300), run).await???;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1) switch-over"), "{stdout}");
    assert!(stdout.contains("2) fail-over"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary in\n{stdout}"));
    assert!(summary.contains("switch-over") && summary.contains("fail-over"));
    assert!(summary.ends_with("never"), "{summary}");
    Ok(())
}
