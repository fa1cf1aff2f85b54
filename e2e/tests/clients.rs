//! Real clients against a running `skiff up`: kubectl 1.27 and 1.33 (both installed on machines
//! of this kind), the Python `kubernetes` client from PyPI and the JavaScript
//! `@kubernetes/client-node` from npm, unchanged. Each command's output
//! is checked, not only its exit code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use serde_json::Value;

const KUBECTLS: &[&str] = &["1.27", "1.33"];

fn kubectl_path(version: &str) -> PathBuf {
    PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"))
}

struct Kubectl<'a> {
    bin: PathBuf,
    kubeconfig: &'a Path,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(args))
    }

    /// `kubectl rollout status` of a deployment, which must finish rolling out.
    fn rollout_status(&self, deploy: &str) -> Result<()> {
        let out = self.run(&[
            "rollout",
            "status",
            &format!("deployment/{deploy}"),
            "--timeout=120s",
        ])?;
        ensure!(
            out.contains("successfully rolled out"),
            "rollout status: {out}"
        );
        Ok(())
    }

    /// Runs kubectl with `input` on stdin; its exit status, stdout and stderr.
    fn output(&self, args: &[&str], input: &str) -> Result<std::process::Output> {
        use std::io::Write as _;
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let out = self.output(args, input)?;
        ensure!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command that must fail; its stderr.
    fn fails(&self, args: &[&str], input: &str) -> Result<String> {
        let out = self.output(args, input)?;
        ensure!(
            !out.status.success(),
            "kubectl {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What kubectl reads from `/openapi/v3`: `explain` renders the schemas, and `apply` validates
/// on the server (`fieldValidation`) because the kind's PATCH operation declares it.
fn openapi_suite(k: &Kubectl, version: &str) -> Result<()> {
    let out = k.run(&["explain", "pods"])?;
    ensure!(
        out.contains("KIND:       Pod")
            && out.contains("Pod is a collection of containers")
            && out.contains("spec\t<PodSpec>"),
        "explain pods: {out}"
    );
    let out = k.run(&["explain", "deployment.spec"])?;
    ensure!(
        out.contains("GROUP:      apps")
            && out.contains("FIELD: spec <DeploymentSpec>")
            && out.contains("replicas\t<integer>")
            && out.contains("template\t<PodTemplateSpec> -required-"),
        "explain deployment.spec: {out}"
    );
    let out = k.run(&["explain", "deploy.spec.template.spec.containers.ports"])?;
    ensure!(
        out.contains("FIELD: ports <[]ContainerPort>") && out.contains("containerPort\t<integer>"),
        "explain of a list nested in a list: {out}"
    );
    let err = k.fails(&["explain", "pods.spec.nosuch"], "")?;
    ensure!(
        err.contains("field \"nosuch\" does not exist"),
        "explain of a missing field: {err}"
    );
    // v2 in JSON, as `kubectl get --raw` asks for it, is the same schemas in Swagger 2.0.
    let v2: Value = serde_json::from_str(&k.run(&["get", "--raw", "/openapi/v2"])?)
        .context("/openapi/v2 is not JSON")?;
    ensure!(
        v2["swagger"] == "2.0"
            && v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"].is_object()
            && v2["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"].is_object(),
        "/openapi/v2: {}",
        v2.to_string().chars().take(300).collect::<String>()
    );

    let name = format!("strict-{}", version.replace('.', "-"));
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  bogus: 1\ndata:\n  a: \"1\"\n"
    );
    // Default validation is strict: the server rejects the unknown field by name, and nothing
    // is created.
    for args in [
        &["apply", "-f", "-"][..],
        &["apply", "--validate=strict", "-f", "-"],
    ] {
        let err = k.fails(args, &manifest)?;
        ensure!(
            err.contains("unknown field \"metadata.bogus\""),
            "kubectl {args:?} of an unknown field: {err}"
        );
    }
    let err = k.fails(&["get", "configmap", &name], "")?;
    ensure!(
        err.contains("NotFound"),
        "a rejected apply created {name}: {err}"
    );
    let out = k.output(&["apply", "--validate=warn", "-f", "-"], &manifest)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.contains("unknown field \"metadata.bogus\""),
        "apply --validate=warn: {err}"
    );
    k.run(&["delete", "configmap", &name])?;

    // kubectl 1.29 and later compute apply patches from the schemas' merge keys: a container
    // dropped from the manifest must be deleted by name, not left behind by a list that the
    // server merges.
    let deploy = |containers: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers: {containers}\n"
        )
    };
    k.run_stdin(
        &["apply", "-f", "-"],
        &deploy(r#"[{name: a, image: "x:1", env: [{name: A, value: "1"}, {name: B, value: "2"}]}, {name: b, image: "y:1"}]"#),
    )?;
    let out = k.output(
        &["apply", "-f", "-"],
        &deploy(r#"[{name: a, image: "x:2", env: [{name: A, value: "1"}]}]"#),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && !err.contains("warning"),
        "second apply: {err}"
    );
    let v: Value = serde_json::from_str(&k.run(&["get", "deployment", &name, "-o", "json"])?)?;
    let containers = &v["spec"]["template"]["spec"]["containers"];
    ensure!(
        containers.as_array().map(Vec::len) == Some(1)
            && containers[0]["image"] == "x:2"
            && containers[0]["env"] == serde_json::json!([{"name": "A", "value": "1"}]),
        "apply that dropped a container and a variable: {containers}"
    );
    k.run(&["delete", "deployment", &name])?;
    Ok(())
}

fn kubectl_suite(k: &Kubectl, version: &str, image: &str) -> Result<()> {
    let name = format!("kc-{}", version.replace('.', "-"));
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    suite: kubectl\n    version: \"{version}\"\nspec:\n  containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo hello from {name}; exec sleep 3600\"]\n"
    );
    let out = k.run_stdin(&["apply", "-f", "-"], &pod)?;
    ensure!(out.contains(&format!("pod/{name} created")), "apply: {out}");
    let out = k.run_stdin(&["apply", "-f", "-"], &pod)?;
    ensure!(out.contains("unchanged"), "second apply: {out}");

    let out = k.run(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=120s",
    ])?;
    ensure!(out.contains("condition met"), "wait: {out}");

    let out = k.run(&["get", "pods", "-o", "wide"])?;
    ensure!(
        out.contains("NODE")
            && out
                .lines()
                .any(|l| l.starts_with(&name) && l.contains("Running")),
        "get -o wide: {out}"
    );
    let out = k.run(&["get", "pod", &name, "-o", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    ensure!(v["status"]["phase"] == "Running", "get -o json: {out}");
    let out = k.run(&["get", "pod", &name, "-o", "yaml"])?;
    ensure!(out.contains("phase: Running"), "get -o yaml: {out}");
    let out = k.run(&[
        "get",
        "pods",
        "-l",
        &format!("version={version}"),
        "-o",
        "name",
    ])?;
    ensure!(out.trim() == format!("pod/{name}"), "get -l: {out}");
    let out = k.run(&["get", "nodes"])?;
    ensure!(out.contains("Ready"), "get nodes: {out}");
    for ty in [
        "namespaces",
        "configmaps",
        "leases",
        "events",
        "serviceaccounts",
    ] {
        k.run(&["get", ty, "-A"])?;
    }

    let out = k.run(&["describe", "pod", &name])?;
    ensure!(
        out.contains("Status:") && out.contains("Running"),
        "describe: {out}"
    );
    let out = k.run(&["logs", &name])?;
    ensure!(out.contains(&format!("hello from {name}")), "logs: {out}");

    let out = k.run(&["label", "pod", &name, "tier=web"])?;
    ensure!(out.contains("labeled"), "label: {out}");
    let out = k.run(&["annotate", "pod", &name, "note=checked"])?;
    ensure!(
        out.contains(&format!("pod/{name} annotate")),
        "annotate: {out}"
    );
    let out = k.run(&["get", "pods", "-l", "tier=web", "-o", "name"])?;
    ensure!(out.contains(&name), "label selector after label: {out}");

    let cm = format!("cm-{name}");
    let configmap = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"1\"\n")
    };
    k.run_stdin(&["apply", "-f", "-"], &configmap(&cm))?;
    k.run(&[
        "patch",
        "configmap",
        &cm,
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ])?;
    k.run(&[
        "patch",
        "configmap",
        &cm,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"3"}]"#,
    ])?;
    k.run(&["patch", "configmap", &cm, "-p", r#"{"data":{"c":"4"}}"#])?;
    let v: Value = serde_json::from_str(&k.run(&["get", "configmap", &cm, "-o", "json"])?)?;
    ensure!(
        v["data"] == serde_json::json!({"a": "3", "b": "2", "c": "4"}),
        "patches: {}",
        v["data"]
    );

    // get -w prints the change it is watching for.
    let mut watcher = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(k.kubeconfig)
        .args(["get", "configmaps", "-w", "--request-timeout=8s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    let watched = format!("watched-{name}");
    k.run_stdin(&["apply", "-f", "-"], &configmap(&watched))?;
    std::thread::sleep(Duration::from_secs(1));
    let _ = watcher.kill();
    let out = watcher.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains(&watched), "get -w printed: {text}");

    // Workloads: a Deployment rolls out, scales, shows in `get all`, and its pods go with it.
    let deploy = format!("web-{name}");
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {deploy}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {deploy}}}\n  template:\n    metadata:\n      labels: {{app: {deploy}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: {image}\n        command: [\"sleep\", \"3600\"]\n"
    );
    let out = k.run_stdin(&["apply", "-f", "-"], &manifest)?;
    ensure!(
        out.contains(&format!("deployment.apps/{deploy} created")),
        "apply deployment: {out}"
    );
    let out = k.run(&["scale", &format!("deployment/{deploy}"), "--replicas=2"])?;
    ensure!(out.contains("scaled"), "scale: {out}");
    k.rollout_status(&deploy)?;
    let out = k.run(&["get", "pods", "-l", &format!("app={deploy}"), "-o", "name"])?;
    ensure!(out.lines().count() == 2, "two replicas expected: {out}");
    let out = k.run(&["get", "all"])?;
    ensure!(
        out.contains(&format!("deployment.apps/{deploy}")) && out.contains("replicaset.apps/"),
        "get all: {out}"
    );
    let ssa = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-{name}\ndata:\n  a: \"1\"\n"
    );
    let out = k.run_stdin(&["apply", "--server-side", "-f", "-"], &ssa)?;
    ensure!(
        out.contains("serverside-applied"),
        "apply --server-side: {out}"
    );
    k.run(&["delete", "configmap", &format!("ssa-{name}")])?;
    k.run(&["delete", "deployment", &deploy])?;
    wait_for(
        "the deployment's pods to be gone",
        Duration::from_secs(60),
        || {
            let out = k.run(&["get", "pods", "-l", &format!("app={deploy}"), "-o", "name"])?;
            Ok(out.trim().is_empty().then_some(()))
        },
    )?;

    let out = k.run(&["delete", "pod", &name, "--grace-period=1"])?;
    ensure!(out.contains("deleted"), "delete: {out}");
    let out = k.run(&["delete", "configmap", &cm, &watched])?;
    ensure!(
        out.matches("deleted").count() == 2,
        "delete configmaps: {out}"
    );
    wait_for(
        "the kubectl pod to be gone",
        Duration::from_secs(60),
        || {
            let out = k.run(&["get", "pods", "-o", "name"])?;
            Ok((!out.contains(&name)).then_some(()))
        },
    )
}

/// The `kubectl create` commands, which kubectl 1.32 and later send as protobuf bodies (1.27:
/// JSON), each checked by reading the object back.
fn kubectl_create_suite(k: &Kubectl, version: &str, image: &str) -> Result<()> {
    let v = version.replace('.', "-");
    let get = |what: &[&str]| -> Result<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", "json"]);
        Ok(serde_json::from_str(&k.run(&args)?)?)
    };
    let (ns, cm, secret, deploy, svc, sa, job) = (
        format!("create-{v}"),
        format!("cc-{v}"),
        format!("sc-{v}"),
        format!("dc-{v}"),
        format!("sv-{v}"),
        format!("sa-{v}"),
        format!("jb-{v}"),
    );

    // The body format is the point of this suite: say which one this kubectl used.
    let out = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(k.kubeconfig)
        .args(["create", "namespace", &ns, "-v=8"])
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "create namespace: {log}");
    let protobuf = log.contains("Content-Type: application/vnd.kubernetes.protobuf");
    ensure!(
        protobuf == (version != "1.27"),
        "kubectl {version} sent protobuf: {protobuf}"
    );
    ensure!(
        get(&["namespace", &ns])?["status"]["phase"] == "Active",
        "namespace {ns}"
    );

    k.run(&[
        "create",
        "configmap",
        &cm,
        "--from-literal=a=b",
        "--from-literal=empty=",
    ])?;
    let o = get(&["configmap", &cm])?;
    ensure!(
        o["data"] == serde_json::json!({"a": "b", "empty": ""}),
        "configmap data: {}",
        o["data"]
    );

    k.run(&["create", "secret", "generic", &secret, "--from-literal=k=v"])?;
    let o = get(&["secret", &secret])?;
    ensure!(o["data"]["k"] == "dg==", "secret: {o}");

    k.run(&[
        "create",
        "deployment",
        &deploy,
        &format!("--image={image}"),
        "--port=8080",
        "--",
        "sleep",
        "3600",
    ])?;
    let o = get(&["deployment", &deploy])?;
    let c = &o["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        c["image"] == image
            && c["ports"][0]["containerPort"] == 8080
            && c["command"] == serde_json::json!(["sleep", "3600"])
            && o["spec"]["replicas"] == 1,
        "deployment: {o}"
    );
    k.rollout_status(&deploy)?;

    k.run(&["create", "service", "clusterip", &svc, "--tcp=80:8080"])?;
    let o = get(&["service", &svc])?;
    let p = &o["spec"]["ports"][0];
    ensure!(
        p["port"] == 80
            && p["targetPort"] == 8080
            && p["protocol"] == "TCP"
            && o["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10.")),
        "service: {o}"
    );

    k.run(&["create", "serviceaccount", &sa])?;
    ensure!(
        get(&["serviceaccount", &sa])?["metadata"]["name"] == sa.as_str(),
        "serviceaccount {sa}"
    );

    k.run(&[
        "create",
        "job",
        &job,
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "echo job done",
    ])?;
    let out = k.run(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=120s",
    ])?;
    ensure!(out.contains("condition met"), "job wait: {out}");
    let out = k.run(&["logs", &format!("job/{job}")])?;
    ensure!(out.contains("job done"), "job logs: {out}");

    k.run(&["delete", "deployment", &deploy])?;
    k.run(&["delete", "job", &job, "--cascade=background"])?;
    k.run(&["delete", "configmap", &cm])?;
    k.run(&["delete", "secret", &secret])?;
    k.run(&["delete", "service", &svc])?;
    k.run(&["delete", "serviceaccount", &sa])?;
    k.run(&["delete", "namespace", &ns])?;
    wait_for(
        "the create suite's pods to be gone",
        Duration::from_secs(60),
        || {
            let out = k.run(&["get", "pods", "-o", "name"])?;
            Ok((!out.contains(&deploy) && !out.contains(&job)).then_some(()))
        },
    )
}

/// The last core kinds and the groups added for clients: a ReplicationController scaled with
/// `kubectl scale rc` (its pods follow), a PodTemplate, LimitRange and ResourceQuota (each write
/// warns that skiff does not apply them), RBAC objects (warned as not enforced), `kubectl get
/// cs` and the Local APIServices.
fn core_kinds_suite(k: &Kubectl, image: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: v1
kind: ReplicationController
metadata: {{name: old-style}}
spec:
  replicas: 1
  template:
    metadata: {{labels: {{app: old-style}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: c, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: PodTemplate
metadata: {{name: tpl}}
template:
  metadata: {{labels: {{app: tpl}}}}
  spec:
    containers: [{{name: c, image: "{image}"}}]
---
apiVersion: v1
kind: LimitRange
metadata: {{name: lr}}
spec:
  limits: [{{type: Container, default: {{cpu: 500m}}, max: {{cpu: "1"}}}}]
---
apiVersion: v1
kind: ResourceQuota
metadata: {{name: q}}
spec:
  hard: {{pods: "10"}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: read-pods}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects: [{{kind: User, name: jane}}]
"#
    );
    let out = k.output(&["apply", "-f", "-"], &manifest)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "apply of the core kinds: {err}");
    for warning in [
        "skiff does not apply LimitRanges yet",
        "skiff does not enforce ResourceQuotas yet",
        "skiff does not authenticate or authorize requests yet",
    ] {
        ensure!(err.contains(warning), "no warning {warning:?}: {err}");
    }
    let rc_pods = |want: usize| {
        wait_for(
            &format!("{want} pods of rc old-style"),
            Duration::from_secs(60),
            || {
                let out = k.run(&["get", "pods", "-l", "app=old-style", "-o", "name"])?;
                Ok((out.lines().count() == want).then_some(()))
            },
        )
    };
    rc_pods(1)?;
    let out = k.run(&["scale", "rc", "old-style", "--replicas=2"])?;
    ensure!(out.contains("scaled"), "kubectl scale rc: {out}");
    rc_pods(2)?;
    let out = k.run(&["get", "rc", "old-style", "-o", "wide"])?;
    ensure!(
        out.contains("app=old-style"),
        "kubectl get rc -o wide: {out}"
    );
    let out = k.run(&["get", "podtemplates,limits,quota,roles,rolebindings"])?;
    for name in ["tpl", "lr", "q", "pod-reader", "Role/pod-reader"] {
        ensure!(out.contains(name), "{name} missing: {out}");
    }
    let out = k.output(&["get", "cs"], "")?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        stdout.contains("etcd-0") && stdout.contains("Healthy") && stderr.contains("deprecated"),
        "kubectl get cs: {stdout}{stderr}"
    );
    let out = k.run(&["get", "apiservices"])?;
    ensure!(
        out.contains("v1.apps") && out.contains("Local") && out.contains("True"),
        "kubectl get apiservices: {out}"
    );
    k.run(&["delete", "rc", "old-style"])?;
    k.run(&[
        "delete",
        "podtemplate/tpl",
        "limitrange/lr",
        "quota/q",
        "role/pod-reader",
        "rolebinding/read-pods",
    ])?;
    rc_pods(0)
}

#[test]
fn real_clients() -> Result<()> {
    with_cluster(|c, _, reg| {
        let image = busybox(reg);
        c.start()?;
        let kubeconfig = c.kubeconfig();
        for v in KUBECTLS {
            let k = Kubectl {
                bin: kubectl_path(v),
                kubeconfig: &kubeconfig,
            };
            openapi_suite(&k, v).with_context(|| format!("kubectl {v} and OpenAPI"))?;
            kubectl_suite(&k, v, &image).with_context(|| format!("kubectl {v}"))?;
            kubectl_create_suite(&k, v, &image).with_context(|| format!("kubectl {v} create"))?;
        }
        let k = Kubectl {
            bin: kubectl_path("1.33"),
            kubeconfig: &kubeconfig,
        };
        core_kinds_suite(&k, &image).context("the last core kinds")?;
        let python = std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = workspace().join("e2e/clients/python_client.py");
        let out = run(Command::new(&python)
            .arg(&script)
            .arg(&kubeconfig)
            .arg(&image))
        .context("python kubernetes client")?;
        ensure!(
            out.contains("all steps passed"),
            "python client said: {out}"
        );
        let js = std::env::var("SKIFF_JS_CLIENT").context(
            "SKIFF_JS_CLIENT names the node_modules holding @kubernetes/client-node (e2e/run-tests.sh installs it)",
        )?;
        let out = run(Command::new("node")
            .arg(workspace().join("e2e/clients/js_client.mjs"))
            .arg(&kubeconfig)
            .arg(&image)
            .env("NODE_PATH", js))
        .context("the JavaScript client")?;
        ensure!(
            out.contains("all steps passed"),
            "the JavaScript client said: {out}"
        );
        Ok(())
    })
}
