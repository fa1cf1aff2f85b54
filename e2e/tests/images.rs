//! Image formats from outside: an image whose layers skopeo recompressed with zstd is pulled
//! from the registry, verified, unpacked and run, and its layers' media type really is zstd.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::{busybox, run, wait_for, with_cluster};

#[test]
fn zstd_layers_pull_and_run() -> Result<()> {
    with_cluster(|c, work, reg| {
        let zstd_image = format!("{reg}/busybox:zstd");
        // Recompress through an uncompressed copy. skopeo would otherwise reuse the gzip blobs
        // its blob-info cache knows are in this registry, so it runs with an empty cache of its
        // own (a tmpfs in a private mount namespace) and the host's cache is left alone.
        let plain = work.join("plain");
        run(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            "--dest-decompress",
            &format!("docker://{}", busybox(reg)),
            &format!("dir:{}", plain.display()),
        ]))?;
        let cache = "/var/lib/containers/cache";
        run(Command::new("unshare").args([
            "-m",
            "sh",
            "-c",
            &format!(
                "mkdir -p {cache} && mount -t tmpfs tmpfs {cache} && skopeo copy \
                 --dest-tls-verify=false --dest-compress-format zstd dir:{} docker://{zstd_image}",
                plain.display()
            ),
        ]))?;
        let manifest = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{zstd_image}"),
        ]))?;
        let manifest: serde_json::Value = serde_json::from_str(&manifest)?;
        let layers = manifest["layers"].as_array().context("no layers")?;
        ensure!(
            !layers.is_empty()
                && layers
                    .iter()
                    .all(|l| l["mediaType"].as_str().is_some_and(|m| m.ends_with("zstd"))),
            "skopeo did not write zstd layers: {manifest}"
        );
        c.start()?;
        let pod = work.join("zstd.yaml");
        std::fs::write(
            &pod,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: zstd\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {zstd_image}\n    command: [\"sh\", \"-c\", \"cat /opq/new && echo from-zstd\"]\n"
            ),
        )?;
        c.skiff(&["apply", "-f", pod.to_str().unwrap_or_default()])?;
        wait_for("the zstd pod to succeed", Duration::from_secs(60), || {
            let p = c.pod("zstd")?;
            ensure!(
                p["status"]["phase"] != "Failed",
                "pod failed: {}",
                p["status"]
            );
            Ok((p["status"]["phase"] == "Succeeded").then_some(()))
        })?;
        let logs = c.skiff(&["logs", "zstd"])?;
        ensure!(
            logs.contains("new") && logs.contains("from-zstd"),
            "logs: {logs}"
        );
        Ok(())
    })
}
