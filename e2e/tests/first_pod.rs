//! README's first pod, verbatim, on a machine without internet: `scripts/busybox-image.sh`
//! builds the image `manifests/pod.yaml` names, `skiff image import` puts it on the node, and
//! the manifest as it is in the repository runs, logs and is deleted.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;

#[test]
fn readmes_first_pod_runs_from_an_imported_image() -> Result<()> {
    with_cluster(|c, work, _| {
        c.start()?;
        let archive = work.join("busybox.tar");
        let out = run(Command::new("sh")
            .arg(workspace().join("scripts/busybox-image.sh"))
            .arg(&archive))?;
        ensure!(
            out.contains("docker.io/library/busybox:1.36"),
            "the script said: {out}"
        );
        let out = run(Command::new(&c.bin)
            .args(["image", "--data-dir"])
            .arg(&c.data)
            .arg("import")
            .arg(&archive))?;
        ensure!(
            out.contains("docker.io/library/busybox:1.36"),
            "import said: {out}"
        );

        let manifest = workspace().join("manifests/pod.yaml");
        let manifest = manifest.to_str().unwrap_or_default();
        c.skiff(&["apply", "-f", manifest])?;
        wait_for("pod hello to log", Duration::from_secs(60), || {
            let logs = c.skiff(&["logs", "hello"]).unwrap_or_default();
            Ok(logs.contains("hello from skiff 0").then_some(()))
        })
        .map_err(|e| e.context(tail(&c.log)))?;
        let pod = c.pod("hello")?;
        ensure!(
            pod["status"]["phase"] == "Running",
            "pod hello: {}",
            pod["status"]
        );
        // The tag is not `latest`, so the node uses the imported image and pulls nothing.
        let events = c.skiff(&["get", "events", "-o", "json"])?;
        ensure!(
            events.contains("already present on machine") && !events.contains("\"Pulling\""),
            "the pod pulled instead of using the imported image: {events}"
        );
        // The manifest's shell traps SIGTERM: deleting it (waiting, as kubectl does) does not
        // sit out the 30 s grace period.
        let started = std::time::Instant::now();
        c.skiff(&["delete", "-f", manifest])?;
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "deleting the first pod took {:?}: its process did not stop on SIGTERM",
            started.elapsed()
        );
        Ok(())
    })
}
