//! API aggregation: an extension API server in a pod (a small HTTPS server in Python, its
//! certificate issued for `api.wardle.svc` by a CA made here) serves `wardle.example.com/v1alpha1`
//! through skiff once an APIService names its Service with that CA. The APIService turns
//! Available, discovery lists the group, kubectl reaches the server's resources through the API,
//! and when the server's pod goes the APIService says why it is unavailable and requests get a
//! 503 instead of a hang.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use e2e::*;
use serde_json::Value;

const SERVER: &str = r#"
import http.server, json, ssl
GV = "wardle.example.com/v1alpha1"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/apis/" + GV:
            body = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV,
                    "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": True,
                                   "kind": "Flunder", "verbs": ["get", "list"]}]}
        elif path == "/apis/" + GV + "/namespaces/default/flunders":
            body = {"kind": "FlunderList", "apiVersion": GV, "metadata": {"resourceVersion": "1"},
                    "items": [{"kind": "Flunder", "apiVersion": GV,
                               "metadata": {"name": "from-the-extension", "namespace": "default",
                                            "creationTimestamp": "2026-01-01T00:00:00Z"}}]}
        else:
            self.send_response(404); self.end_headers(); return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/certs/tls.crt", "/certs/tls.key")
srv = http.server.HTTPServer(("0.0.0.0", 8443), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// A CA and a serving certificate for `api.wardle.svc` signed by it, with openssl.
fn certificates(dir: &Path) -> Result<()> {
    let ssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wardle-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=api.wardle.svc",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ])?;
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:api.wardle.svc\n")?;
    ssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "tls.crt",
    ])?;
    Ok(())
}

fn available(k: &Kubectl) -> Result<(String, String)> {
    let out = k.ok(
        &[
            "get",
            "apiservice",
            "v1alpha1.wardle.example.com",
            "-o",
            "json",
        ],
        None,
    )?;
    let v: Value = serde_json::from_str(&out)?;
    let c = v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Available")
        .cloned()
        .unwrap_or_default();
    Ok((
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

#[test]
fn an_extension_api_server_in_a_pod_serves_its_group_through_skiff() -> Result<()> {
    with_cluster(|c, work, reg| {
        run(Command::new("sh")
            .arg(workspace().join("e2e/scripts/make-suite-images.sh"))
            .arg(work.join("suite-images"))
            .arg(reg))?;
        let certs = work.join("certs");
        std::fs::create_dir_all(&certs)?;
        certificates(&certs)?;
        c.start()?;
        let k = c.kubectl("1.33");
        let path = |f: &str| certs.join(f).display().to_string();
        k.ok(&["create", "namespace", "wardle"], None)?;
        k.ok(
            &[
                "-n",
                "wardle",
                "create",
                "secret",
                "tls",
                "api-tls",
                &format!("--cert={}", path("tls.crt")),
                &format!("--key={}", path("tls.key")),
            ],
            None,
        )?;
        k.ok(
            &[
                "-n",
                "wardle",
                "create",
                "configmap",
                "server",
                "--from-literal",
                &format!("server.py={SERVER}"),
            ],
            None,
        )?;
        let ca =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(certs.join("ca.crt"))?);
        let manifest = format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: api, namespace: wardle, labels: {{app: wardle-api}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: api
    image: {reg}/library/python:latest
    command: ["python3", "-u", "/srv/server.py"]
    ports: [{{containerPort: 8443, name: https}}]
    readinessProbe: {{tcpSocket: {{port: 8443}}, periodSeconds: 1}}
    volumeMounts:
    - {{name: certs, mountPath: /certs, readOnly: true}}
    - {{name: server, mountPath: /srv, readOnly: true}}
  volumes:
  - {{name: certs, secret: {{secretName: api-tls}}}}
  - {{name: server, configMap: {{name: server}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: wardle}}
spec:
  selector: {{app: wardle-api}}
  ports: [{{port: 443, targetPort: https}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1alpha1.wardle.example.com}}
spec:
  group: wardle.example.com
  version: v1alpha1
  groupPriorityMinimum: 1000
  versionPriority: 15
  caBundle: {ca}
  service: {{namespace: wardle, name: api}}
"#
        );
        k.ok(&["apply", "-f", "-"], Some(&manifest))?;
        wait_for(
            "the APIService to be Available",
            Duration::from_secs(120),
            || {
                let (status, reason) = available(&k)?;
                Ok((status == "True").then_some(reason))
            },
        )
        .with_context(|| tail(&c.log))?;

        let apis = k.ok(&["get", "--raw", "/apis"], None)?;
        ensure!(apis.contains("\"wardle.example.com\""), "/apis: {apis}");
        let list = k.ok(
            &[
                "get",
                "--raw",
                "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
            ],
            None,
        )?;
        ensure!(
            list.contains("from-the-extension"),
            "the extension's list: {list}"
        );
        let out = k.ok(&["get", "flunders", "-o", "name"], None)?;
        ensure!(
            out.contains("flunder.wardle.example.com/from-the-extension"),
            "kubectl get flunders: {out}"
        );
        let local = k.ok(&["get", "apiservices"], None)?;
        ensure!(
            local.contains("v1.apps") && local.contains("Local") && local.contains("wardle/api"),
            "kubectl get apiservices: {local}"
        );

        // The server goes: the APIService says why, and a request is refused at once.
        k.ok(&["-n", "wardle", "delete", "pod", "api"], None)?;
        let reason = wait_for(
            "the APIService to be unavailable",
            Duration::from_secs(60),
            || {
                let (status, reason) = available(&k)?;
                Ok((status == "False").then_some(reason))
            },
        )?;
        ensure!(reason == "MissingEndpoints", "unavailable because {reason}");
        let out = k.output(
            &[
                "get",
                "--raw",
                "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
            ],
            None,
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && (err.contains("ServiceUnavailable") || err.contains("unable to handle")),
            "a request with no server: {err}"
        );
        Ok(())
    })
}
