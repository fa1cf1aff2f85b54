//! Images from outside: an image whose layers skopeo recompressed with zstd is pulled from the
//! registry, verified, unpacked and run, and its layers' media type really is zstd; a private
//! registry (docker-registry with htpasswd) is pulled from with the credentials of a pod's
//! `imagePullSecrets`, made by `kubectl create secret docker-registry`, and an image one pod
//! pulled with credentials is not handed to pods without them (KEP-2535); the same through a
//! registry that uses the bearer-token flow (a token server signing JWTs it trusts).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::{Cluster, busybox, run, start_registry_with, wait_for, with_cluster};

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

fn kubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    run(Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(args))
}

/// A docker-registry that only lets alice (password s3cret) in, by htpasswd.
fn start_htpasswd_registry(work: &std::path::Path) -> Result<(e2e::Proc, String)> {
    let htpasswd = run(Command::new("htpasswd").args(["-Bbn", "alice", "s3cret"]))?;
    let htpasswd_file = work.join("htpasswd");
    std::fs::write(&htpasswd_file, htpasswd)?;
    start_registry_with(
        work,
        "private",
        &format!(
            "auth:\n  htpasswd:\n    realm: skiff-e2e\n    path: {}\n",
            htpasswd_file.display()
        ),
    )
}

/// Copies `from` (in the open registry) to `to` with alice's credentials.
fn push_as_alice(from: &str, to: &str) -> Result<()> {
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &format!("docker://{from}"),
        &format!("docker://{to}"),
    ]))?;
    Ok(())
}

/// `kubectl create secret docker-registry NAME` for alice at `server`.
fn docker_secret(c: &Cluster, name: &str, server: &str, password: &str) -> Result<()> {
    kubectl(
        c,
        &[
            "create",
            "secret",
            "docker-registry",
            name,
            &format!("--docker-server={server}"),
            "--docker-username=alice",
            &format!("--docker-password={password}"),
        ],
    )?;
    Ok(())
}

/// A pod named `name` running `image` with pull policy `policy` and the given pull secrets.
fn private_pod(name: &str, image: &str, policy: &str, secrets: &[&str]) -> String {
    let secrets: String = secrets.iter().map(|s| format!("  - name: {s}\n")).collect();
    let secrets = if secrets.is_empty() {
        String::new()
    } else {
        format!("  imagePullSecrets:\n{secrets}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{secrets}  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// The waiting reason of the pod's first container, once it has one.
fn waiting_reason(c: &Cluster, name: &str) -> Result<Option<String>> {
    let p = c.pod(name)?;
    Ok(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .map(str::to_owned),
    )
}

#[test]
fn private_images_need_pull_secrets() -> Result<()> {
    with_cluster(|c, work, reg| {
        let (_private, private) = start_htpasswd_registry(work)?;
        let image = format!("{private}/team/busybox:1.36");
        push_as_alice(&busybox(reg), &image)?;
        c.start()?;
        docker_secret(c, "regcred", &private, "s3cret")?;
        docker_secret(c, "badcred", &private, "wrong")?;
        let apply = |name: &str, yaml: String| -> Result<()> {
            let file = work.join(format!("{name}.yaml"));
            std::fs::write(&file, yaml)?;
            c.skiff(&["apply", "-f", file.to_str().unwrap_or_default()])?;
            Ok(())
        };
        let running = |name: &str| {
            wait_for(
                &format!("pod {name} to run"),
                Duration::from_secs(60),
                || Ok((c.pod(name)?["status"]["phase"] == "Running").then_some(())),
            )
        };
        let refused = |name: &str, reasons: &[&str]| -> Result<String> {
            let reason = wait_for(
                &format!("pod {name} to be refused its image"),
                Duration::from_secs(60),
                || Ok(waiting_reason(c, name)?.filter(|r| reasons.contains(&r.as_str()))),
            )?;
            ensure!(
                c.pod(name)?["status"]["phase"] == "Pending",
                "pod {name} is not pending"
            );
            Ok(reason)
        };

        // No secret: the registry says no, and the pod says why.
        apply("anon", private_pod("anon", &image, "IfNotPresent", &[]))?;
        refused("anon", &["ErrImagePull", "ImagePullBackOff"])?;
        let message =
            c.pod("anon")?["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                .to_string();
        ensure!(
            message.to_lowercase().contains("authorized"),
            "the refused pull says {message}"
        );

        // A wrong secret and a right one: the right one pulls.
        apply(
            "owner",
            private_pod("owner", &image, "IfNotPresent", &["badcred", "regcred"]),
        )?;
        running("owner")?;

        // The image is now on the node, yet pods without the credentials do not get it.
        apply("thief", private_pod("thief", &image, "IfNotPresent", &[]))?;
        refused("thief", &["ErrImagePull", "ImagePullBackOff"])?;
        apply("never", private_pod("never", &image, "Never", &["badcred"]))?;
        refused("never", &["ErrImageNeverPull"])?;

        // A pod with the credentials uses it.
        apply(
            "friend",
            private_pod("friend", &image, "Never", &["regcred"]),
        )?;
        running("friend")?;

        // A registry behind a token server (the bearer flow): the secret's credentials buy a
        // token that lets the pull through; without them the token grants nothing.
        let (_tokens, tokens) = start_token_server(work)?;
        let (_bearer, bearer) = start_registry_with(
            work,
            "bearer",
            &format!(
                "auth:\n  token:\n    realm: http://{tokens}/token\n    service: skiff-e2e-registry\n    issuer: skiff-e2e-issuer\n    rootcertbundle: {}\n",
                work.join("token-cert.pem").display()
            ),
        )?;
        let bearer_image = format!("{bearer}/team/busybox:1.36");
        push_as_alice(&busybox(reg), &bearer_image)?;
        docker_secret(c, "tokencred", &bearer, "s3cret")?;
        apply(
            "bearer-anon",
            private_pod("bearer-anon", &bearer_image, "IfNotPresent", &[]),
        )?;
        refused("bearer-anon", &["ErrImagePull", "ImagePullBackOff"])?;
        apply(
            "bearer-owner",
            private_pod(
                "bearer-owner",
                &bearer_image,
                "IfNotPresent",
                &["tokencred"],
            ),
        )?;
        running("bearer-owner")?;
        Ok(())
    })
}

/// `e2e/clients/token_server.py` on a free port with a fresh self-signed issuer certificate
/// (`<work>/token-cert.pem`), granting alice:s3cret.
fn start_token_server(work: &std::path::Path) -> Result<(e2e::Proc, String)> {
    let (key, cert) = (work.join("token-key.pem"), work.join("token-cert.pem"));
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=skiff-e2e-issuer",
        "-days",
        "2",
        "-keyout",
        key.to_str().unwrap_or_default(),
        "-out",
        cert.to_str().unwrap_or_default(),
    ]))?;
    let port = e2e::free_port()?;
    let p = e2e::Proc::spawn(
        "token server",
        Command::new("python3")
            .arg(e2e::workspace().join("e2e/clients/token_server.py"))
            .arg(port.to_string())
            .arg(&key)
            .arg(&cert)
            .arg("skiff-e2e-issuer")
            .arg("alice:s3cret"),
        &work.join("token-server.log"),
    )?;
    let addr = format!("127.0.0.1:{port}");
    wait_for(
        "the token server to listen",
        Duration::from_secs(20),
        || Ok(std::net::TcpStream::connect(&addr).ok().map(|_| ())),
    )?;
    Ok((p, addr))
}

/// The node's registries file: a registry that does not exist is served by its mirrors (the
/// first of which is down), and a private registry by the node-wide credentials, with no pull
/// secret in the pod. A broken file stops `skiff up` with an error that names it.
#[test]
fn a_registries_file_gives_mirrors_and_node_credentials() -> Result<()> {
    with_cluster(|c, work, reg| {
        let (_private, private) = start_htpasswd_registry(work)?;
        let private_image = format!("{private}/team/busybox:1.36");
        push_as_alice(&busybox(reg), &private_image)?;

        let broken = work.join("broken-registries.yaml");
        std::fs::write(
            &broken,
            "mirrors:\n  docker.io:\n    endpoints: [\"http://x\"]\n",
        )?;
        let out = Command::new(&c.bin)
            .args(["up", "--data-dir"])
            .arg(work.join("never"))
            .arg("--registries-config")
            .arg(&broken)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && err.contains(broken.to_str().unwrap_or_default())
                && err.contains("endpoints"),
            "skiff up with a broken registries file: {err}"
        );

        let file = work.join("registries.yaml");
        std::fs::write(
            &file,
            format!(
                "mirrors:\n  registry.invalid:\n    endpoint:\n      - \"http://127.0.0.1:1\"\n      - \"http://{reg}\"\nconfigs:\n  \"{private}\":\n    auth:\n      username: alice\n      password: s3cret\n"
            ),
        )?;
        c.extra_args = vec![
            "--registries-config".into(),
            file.to_string_lossy().into_owned(),
        ];
        c.start()?;
        for (name, image) in [
            ("mirrored", "registry.invalid/busybox:1.36".to_owned()),
            ("nodecreds", private_image),
        ] {
            let pod = work.join(format!("{name}.yaml"));
            std::fs::write(&pod, private_pod(name, &image, "IfNotPresent", &[]))?;
            c.skiff(&["apply", "-f", pod.to_str().unwrap_or_default()])?;
            wait_for(
                &format!("pod {name} to run"),
                Duration::from_secs(60),
                || Ok((c.pod(name)?["status"]["phase"] == "Running").then_some(())),
            )?;
        }
        Ok(())
    })
}

/// `skiff image`: pull with its final line, ls, rm by id prefix, and import of OCI-layout and
/// docker-save archives (skopeo writes both; gzip too), from which a pod runs with pull policy
/// Never. A file that is not an image archive is refused with the reason.
#[test]
fn skiff_image_pulls_lists_removes_and_imports() -> Result<()> {
    with_cluster(|c, work, reg| {
        c.start()?;
        let data = c.data.to_string_lossy().into_owned();
        let image = |args: &[&str]| -> Result<String> {
            let mut all = vec!["image", "--data-dir", &data];
            all.extend_from_slice(args);
            run(Command::new(&c.bin).args(&all))
        };
        let out = image(&["pull", &busybox(reg)])?;
        ensure!(
            out.starts_with(&format!("pulled {}", busybox(reg))),
            "pull said {out}"
        );
        let id = out
            .split("(sha256:")
            .nth(1)
            .and_then(|s| s.get(..12))
            .context("no image id")?
            .to_owned();
        let listed = image(&["ls"])?;
        ensure!(
            listed.contains(&busybox(reg)) && listed.contains(&id),
            "ls said {listed}"
        );
        image(&["rm", &id])?;
        let listed = image(&["ls"])?;
        ensure!(!listed.contains(&id), "still listed after rm: {listed}");

        let oci = work.join("oci.tar");
        let docker = work.join("docker.tar");
        for (file, kind, name) in [
            (&oci, "oci-archive", "imported/oci:1"),
            (&docker, "docker-archive", "imported/docker:1"),
        ] {
            run(Command::new("skopeo").args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{}", busybox(reg)),
                &format!("{kind}:{}:{name}", file.display()),
            ]))?;
        }
        let out = image(&["import", oci.to_str().unwrap_or_default()])?;
        ensure!(
            out.contains("imported docker.io/imported/oci:1"),
            "import said {out}"
        );
        let out = image(&["import", docker.to_str().unwrap_or_default()])?;
        ensure!(
            out.contains("imported docker.io/imported/docker:1"),
            "import said {out}"
        );
        run(Command::new("gzip").arg("-k").arg(&docker))?;
        image(&["import", &format!("{}.gz", docker.display())])?;
        let listed = image(&["ls"])?;
        ensure!(
            listed.contains("imported/oci:1") && listed.contains("imported/docker:1"),
            "ls said {listed}"
        );

        let bad = Command::new(&c.bin)
            .args(["image", "--data-dir", &data, "import", "/etc/hostname"])
            .output()?;
        let err = String::from_utf8_lossy(&bad.stderr);
        ensure!(
            !bad.status.success()
                && err.contains("/etc/hostname is not a tar or gzip file (an image archive"),
            "import of a non-archive: {err}"
        );

        let pod = work.join("imported.yaml");
        std::fs::write(
            &pod,
            private_pod("imported", "imported/oci:1", "Never", &[]),
        )?;
        c.skiff(&["apply", "-f", pod.to_str().unwrap_or_default()])?;
        wait_for(
            "the pod of the imported image to run",
            Duration::from_secs(60),
            || Ok((c.pod("imported")?["status"]["phase"] == "Running").then_some(())),
        )?;
        Ok(())
    })
}
