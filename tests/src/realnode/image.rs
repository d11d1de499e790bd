//! The sandbox (pause) image: an OCI image archive of one layer holding the
//! static `pause` binary that scripts/realnode.sh builds, written without any
//! registry or container tool.

use std::path::Path;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use super::config::PAUSE_IMAGE;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tar(dir: &Path, out: &Path, entries: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .args(entries)
        .output()
        .context("running tar")?;
    if !output.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Writes `out` (an OCI archive named [`PAUSE_IMAGE`]) from `pause_binary`,
/// using `work` as scratch space.
pub fn write_pause_archive(pause_binary: &Path, work: &Path, out: &Path) -> anyhow::Result<()> {
    let rootfs = work.join("rootfs");
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&rootfs)?;
    std::fs::create_dir_all(&blobs)?;
    std::fs::copy(pause_binary, rootfs.join("pause")).with_context(|| {
        format!(
            "copying {} (build it with scripts/realnode.sh)",
            pause_binary.display()
        )
    })?;
    let layer_tar = work.join("layer.tar");
    tar(&rootfs, &layer_tar, &["."])?;
    let layer = std::fs::read(&layer_tar)?;
    let store = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let digest = sha256_hex(bytes);
        std::fs::write(blobs.join(&digest), bytes)?;
        Ok((format!("sha256:{digest}"), bytes.len()))
    };
    let (layer_digest, layer_size) = store(&layer)?;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = store(config.to_string().as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = store(manifest.to_string().as_bytes())?;
    let tag = PAUSE_IMAGE.rsplit(':').next().unwrap_or("1");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                                       "org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    tar(&layout, out, &["oci-layout", "index.json", "blobs"])
}
