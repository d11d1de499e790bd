//! The harness against real control-plane processes: controllers, RBAC, tokens,
//! the fake kubelet and its processes.

use std::time::Instant;

use joc_ha_tests::controlplane::ControlPlane;

#[tokio::test]
async fn control_plane_starts() -> anyhow::Result<()> {
    let started = Instant::now();
    let plane = ControlPlane::start().await?;
    eprintln!("start took {:.1?}", started.elapsed());
    let out = plane.kubectl(["get", "ns"]).await?;
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted = Instant::now();
    plane.restart_apiserver().await?;
    eprintln!("restart took {:.1?}", restarted.elapsed());
    Ok(())
}
