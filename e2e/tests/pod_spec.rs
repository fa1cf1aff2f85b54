//! The pod spec as ordinary manifests use it, with real containers and kubectl: a Deployment
//! with every volume type (configMap, secret, downwardAPI, projected, emptyDir shared with an
//! init container, memory emptyDir, hostPath, persistentVolumeClaim, subPath, subPathExpr),
//! every env source (secretKeyRef also optional, configMapKeyRef, fieldRef, resourceFieldRef,
//! envFrom of a ConfigMap and a Secret with prefixes, `$(VAR)` expansion), startup, readiness and
//! liveness probes (exec, httpGet, tcpSocket) and hooks (exec, sleep); a ConfigMap update
//! reaching the running pod, a missing key and
//! a missing ConfigMap that the pod recovers from once they appear, invalid specs refused with
//! their field, and warnings for fields skiff does not implement.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e::*;

#[test]
fn pod_spec_volumes_and_environment() -> Result<()> {
    with_cluster(scenario)
}

fn exec(k: &Kubectl, pod: &str, script: &str) -> Result<String> {
    k.ok(&["exec", pod, "--", "sh", "-c", script], None)
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    let k = c.kubectl("1.33");
    let host = work.join("host-data");
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data:
  app.conf: "mode=prod"
  LOG_LEVEL: debug
---
apiVersion: v1
kind: Secret
metadata: {{name: db}}
stringData:
  password: s3cret
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 10Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      initContainers:
      - name: prepare
        image: {reg}/busybox:1.36
        command: ["sh", "-c", "echo prepared > /work/ready"]
        volumeMounts: [{{name: work, mountPath: /work}}]
      containers:
      - name: app
        image: {reg}/busybox:1.36
        command: ["sh", "-c", "echo started $(POD_NAME); mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{limits: {{memory: 64Mi}}}}
        startupProbe: {{exec: {{command: [cat, /work/ready]}}, periodSeconds: 1}}
        readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}
        livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 2}}
        lifecycle:
          postStart: {{exec: {{command: [sh, -c, "echo hooked > /work/poststart"]}}}}
          preStop: {{sleep: {{seconds: 1}}}}
        env:
        - name: PASSWORD
          valueFrom: {{secretKeyRef: {{name: db, key: password}}}}
        - name: MAYBE
          valueFrom: {{secretKeyRef: {{name: db, key: absent, optional: true}}}}
        - name: LEVEL
          valueFrom: {{configMapKeyRef: {{name: app-config, key: LOG_LEVEL}}}}
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: MEM_MB
          valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
        - name: GREETING
          value: "hi-$(POD_NAME)-$$(LITERAL)"
        envFrom:
        - configMapRef: {{name: app-config}}
          prefix: APP_
        - secretRef: {{name: db}}
          prefix: DB_
        volumeMounts:
        - {{name: config, mountPath: /etc/app}}
        - {{name: creds, mountPath: /etc/db}}
        - {{name: info, mountPath: /etc/podinfo}}
        - {{name: work, mountPath: /work}}
        - {{name: host, mountPath: /host}}
        - {{name: config, mountPath: /etc/single.conf, subPath: app.conf}}
        - {{name: fast, mountPath: /fast}}
        - {{name: all, mountPath: /etc/all}}
        - {{name: data, mountPath: /data}}
        - {{name: host, mountPath: /per-pod, subPathExpr: $(POD_NAME)}}
      volumes:
      - name: config
        configMap: {{name: app-config}}
      - name: creds
        secret: {{secretName: db, defaultMode: 0400}}
      - name: info
        downwardAPI:
          items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
      - name: work
        emptyDir: {{}}
      - name: fast
        emptyDir: {{medium: Memory, sizeLimit: 8Mi}}
      - name: host
        hostPath: {{path: {host}, type: DirectoryOrCreate}}
      - name: all
        projected:
          sources:
          - configMap: {{name: app-config, items: [{{key: LOG_LEVEL, path: level}}]}}
          - secret: {{name: db, items: [{{key: password, path: pw}}]}}
          - downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}
      - name: data
        persistentVolumeClaim: {{claimName: data}}
"#,
        host = host.display()
    );
    let out = k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    ensure!(out.contains("deployment.apps/web created"), "apply: {out}");
    // Ready only once the startup probe and the HTTP readiness probe pass.
    k.ok(
        &["rollout", "status", "deployment/web", "--timeout=120s"],
        None,
    )?;
    let web = pod_named(c, "app=web")?;
    let web = web.as_str();
    let pod = c.pod(web)?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(exec(&k, web, "cat /work/poststart")?.trim() == "hooked");
    ensure!(
        exec(&k, web, "cat /etc/all/level /etc/all/pw /etc/all/name")?
            == format!("debugs3cret{web}")
    );
    let fast = exec(&k, web, "cat /proc/mounts")?;
    ensure!(
        fast.lines()
            .any(|l| l.contains(" /fast ") && l.starts_with("tmpfs") && l.contains("size=8192k")),
        "the memory emptyDir is not a tmpfs of 8Mi: {fast}"
    );
    exec(&k, web, "echo kept > /data/f && echo mine > /per-pod/f")?;
    ensure!(
        std::fs::read_to_string(host.join(web).join("f"))?.trim() == "mine",
        "subPathExpr"
    );
    let db = exec(&k, web, "echo ${MAYBE:-unset} $DB_password")?;
    ensure!(
        db.trim() == "unset s3cret",
        "optional and envFrom secret: {db}"
    );
    ensure!(exec(&k, web, "cat /work/ready")?.trim() == "prepared");
    ensure!(exec(&k, web, "cat /etc/app/app.conf")? == "mode=prod");
    ensure!(exec(&k, web, "cat /etc/single.conf")? == "mode=prod");
    ensure!(exec(&k, web, "cat /etc/db/password")? == "s3cret");
    let mode = exec(&k, web, "stat -L -c %a /etc/db/password")?;
    ensure!(mode.trim() == "400", "secret file mode {mode}");
    let mounts = exec(&k, web, "cat /proc/mounts")?;
    ensure!(
        mounts
            .lines()
            .any(|l| l.contains(" /etc/db ") && l.starts_with("tmpfs")),
        "the secret volume is not a tmpfs: {mounts}"
    );
    ensure!(
        mounts
            .lines()
            .any(|l| l.contains(" /etc/app ") && l.contains(" ro,")),
        "the configMap volume is not read-only: {mounts}"
    );
    let labels = exec(&k, web, "cat /etc/podinfo/labels")?;
    ensure!(
        labels.starts_with("app=\"web\"\npod-template-hash="),
        "{labels}"
    );
    let env = exec(
        &k,
        web,
        "echo $PASSWORD $LEVEL $POD_NAME $MEM_MB $GREETING $APP_LOG_LEVEL",
    )?;
    ensure!(
        env.trim() == format!("s3cret debug {web} 64 hi-{web}-$(LITERAL) debug"),
        "environment: {env}"
    );
    let logs = c.skiff(&["logs", web, "-c", "app"])?;
    ensure!(
        logs.contains(&format!("started {web}")),
        "command not expanded: {logs}"
    );
    exec(&k, web, "echo from-pod > /host/written")?;
    ensure!(std::fs::read_to_string(host.join("written"))?.trim() == "from-pod");
    let ro = k.output(&["exec", web, "--", "sh", "-c", "touch /etc/app/new"], None)?;
    ensure!(
        !ro.status.success()
            && String::from_utf8_lossy(&ro.stderr).contains("Read-only file system"),
        "a configMap volume is writable: {}",
        String::from_utf8_lossy(&ro.stderr)
    );

    // An update of the ConfigMap reaches the running pod's file; the subPath copy stays.
    let started = Instant::now();
    k.ok(
        &[
            "patch",
            "configmap",
            "app-config",
            "-p",
            r#"{"data":{"app.conf":"mode=test"}}"#,
        ],
        None,
    )?;
    wait_for(
        "the ConfigMap update in the pod",
        Duration::from_secs(10),
        || Ok((exec(&k, web, "cat /etc/app/app.conf")? == "mode=test").then_some(())),
    )?;
    eprintln!("configMap update visible after {:?}", started.elapsed());
    ensure!(exec(&k, web, "cat /etc/single.conf")? == "mode=prod");

    // A key that does not exist: CreateContainerConfigError, until it is added.
    let missing = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: needs-key}}\nspec:\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    command: [sleep, '3600']\n    env:\n    - name: X\n      valueFrom: {{configMapKeyRef: {{name: app-config, key: LATER}}}}\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&missing))?;
    wait_for(
        "CreateContainerConfigError",
        Duration::from_secs(60),
        || {
            let p = c.pod("needs-key")?;
            let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            Ok((w["reason"] == "CreateContainerConfigError").then(|| w["message"].clone()))
        },
    )
    .and_then(|msg| {
        ensure!(
            msg == "couldn't find key LATER in ConfigMap default/app-config",
            "message: {msg}"
        );
        Ok(())
    })?;
    k.ok(
        &[
            "patch",
            "configmap",
            "app-config",
            "-p",
            r#"{"data":{"LATER":"now"}}"#,
        ],
        None,
    )?;
    wait_for("needs-key to recover", Duration::from_secs(60), || {
        Ok((c.pod("needs-key")?["status"]["phase"] == "Running").then_some(()))
    })?;

    // A ConfigMap volume that does not exist: FailedMount events, the pod waits.
    let absent = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: needs-cm}}\nspec:\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    command: [sleep, '3600']\n    volumeMounts: [{{name: c, mountPath: /c}}]\n  volumes:\n  - name: c\n    configMap: {{name: absent}}\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&absent))?;
    wait_for("a FailedMount event", Duration::from_secs(60), || {
        let ev = k.ok(
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=needs-cm,reason=FailedMount",
                "-o",
                "jsonpath={.items[*].message}",
            ],
            None,
        )?;
        Ok(ev
            .contains("MountVolume.SetUp failed for volume \"c\" : configmap \"absent\" not found")
            .then_some(()))
    })?;
    ensure!(c.pod("needs-cm")?["status"]["phase"] == "Pending");
    k.ok(
        &["create", "configmap", "absent", "--from-literal=k=v"],
        None,
    )?;
    wait_for("needs-cm to start", Duration::from_secs(60), || {
        Ok((c.pod("needs-cm")?["status"]["phase"] == "Running").then_some(()))
    })?;

    // Invalid specs are refused with the field that is wrong, and nothing is stored.
    let bad = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    volumeMounts: [{{name: nope, mountPath: /x, subPath: ../etc}}]\n"
    );
    let out = k.output(&["apply", "-f", "-"], Some(&bad))?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "an invalid pod was accepted");
    ensure!(
        err.contains("spec.containers[0].volumeMounts[0].name: Not found: \"nope\"")
            && err.contains("spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../etc\": must not contain '..'"),
        "error: {err}"
    );
    ensure!(k.output(&["get", "pod", "bad"], None)?.status.code() == Some(1));

    // A field skiff does not implement is named in a warning and an event.
    let warned = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: warned}}\nspec:\n  hostUsers: false\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    command: [sleep, '3600']\n"
    );
    let out = k.output(&["apply", "-f", "-"], Some(&warned))?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success()
            && err.contains("Warning: spec.hostUsers: user namespaces are not supported by skiff"),
        "warning: {err}"
    );
    wait_for("an UnsupportedField event", Duration::from_secs(30), || {
        let ev = k.ok(
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=warned,reason=UnsupportedField",
                "-o",
                "name",
            ],
            None,
        )?;
        Ok((!ev.trim().is_empty()).then_some(()))
    })?;

    // Deleting the Deployment's pod unmounts and removes its volumes; the claim's data stays
    // for the replacement.
    k.ok(
        &["delete", "pod", web, "--wait=true", "--timeout=60s"],
        None,
    )?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mountinfo.contains(&uid),
        "mounts of pod {uid} left behind: {mountinfo}"
    );
    ensure!(
        !c.data.join("agent/pods").join(&uid).exists(),
        "the pod's directory is left behind"
    );
    k.ok(
        &["rollout", "status", "deployment/web", "--timeout=120s"],
        None,
    )?;
    let next = pod_named(c, "app=web")?;
    ensure!(exec(&k, &next, "cat /data/f")?.trim() == "kept");
    Ok(())
}

#[test]
fn probes_hooks_sidecars_and_deadlines() -> Result<()> {
    with_cluster(probes_scenario)
}

fn pod_named(c: &Cluster, label: &str) -> Result<String> {
    let k = c.kubectl("1.33");
    let out = k.ok(
        &[
            "get",
            "pods",
            "-l",
            label,
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    )?;
    ensure!(!out.is_empty(), "no pod with {label}");
    Ok(out)
}

fn probes_scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    let k = c.kubectl("1.33");
    let host = work.join("hooks");
    std::fs::create_dir_all(&host)?;
    let web = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      initContainers:
      - name: logger
        image: {reg}/busybox:1.36
        restartPolicy: Always
        command: ["sh", "-c", "exec sleep 3600"]
        startupProbe: {{exec: {{command: [sh, -c, "true"]}}, periodSeconds: 1}}
      containers:
      - name: httpd
        image: {reg}/busybox:1.36
        command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 2}}
        livenessProbe: {{exec: {{command: [cat, /www/healthz]}}, periodSeconds: 2, failureThreshold: 2}}
        lifecycle:
          postStart: {{exec: {{command: [sh, -c, "mkdir -p /www && echo hooked > /www/poststart"]}}}}
          preStop: {{exec: {{command: [sh, -c, "echo $HOSTNAME > /hooks/prestop-$HOSTNAME"]}}}}
        volumeMounts: [{{name: hooks, mountPath: /hooks}}]
      volumes:
      - name: hooks
        hostPath: {{path: {host}}}
"#,
        host = host.display()
    );
    k.ok(&["apply", "-f", "-"], Some(&web))?;
    let out = k.ok(
        &["rollout", "status", "deployment/web", "--timeout=120s"],
        None,
    )?;
    ensure!(out.contains("successfully rolled out"), "rollout: {out}");
    let pod = pod_named(c, "app=web")?;
    let p = c.pod(&pod)?;
    ensure!(
        p["status"]["initContainerStatuses"][0]["started"] == true
            && p["status"]["initContainerStatuses"][0]["state"]["running"].is_object(),
        "the sidecar does not run: {}",
        p["status"]["initContainerStatuses"]
    );
    ensure!(p["status"]["containerStatuses"][0]["ready"] == true);
    ensure!(exec(&k, &pod, "cat /www/poststart")?.trim() == "hooked");

    // Break the health file: readiness and liveness fail, the container is restarted (which
    // writes the file again) and becomes ready again.
    exec(&k, &pod, "rm /www/healthz")?;
    wait_for("the liveness restart", Duration::from_secs(60), || {
        let p = c.pod(&pod)?;
        let cs = &p["status"]["containerStatuses"][0];
        Ok((cs["restartCount"].as_i64().unwrap_or(0) >= 1 && cs["ready"] == true).then_some(()))
    })?;
    let events = k.ok(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        None,
    )?;
    for want in [
        "Unhealthy: Liveness probe failed: cat: can't open '/www/healthz': No such file or directory",
        "Killing: Container httpd failed liveness probe, will be restarted",
        "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404",
    ] {
        ensure!(events.contains(want), "no {want:?} in events:\n{events}");
    }

    // preStop runs when a pod is deleted.
    k.ok(
        &["delete", "pod", &pod, "--wait=true", "--timeout=60s"],
        None,
    )?;
    ensure!(
        host.join(format!("prestop-{pod}")).exists(),
        "preStop did not run"
    );

    // A startup probe holds readiness back until it succeeds.
    let slow = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: slow}}\nspec:\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    command: [sh, -c, 'sleep 4; touch /tmp/started; exec sleep 3600']\n    startupProbe: {{exec: {{command: [sh, -c, 'test -f /tmp/started']}}, periodSeconds: 1, failureThreshold: 30}}\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&slow))?;
    let started = Instant::now();
    wait_for("slow to be Running", Duration::from_secs(60), || {
        Ok((c.pod("slow")?["status"]["phase"] == "Running").then_some(()))
    })?;
    let p = c.pod("slow")?;
    ensure!(
        p["status"]["containerStatuses"][0]["ready"] == false,
        "ready before its startup probe succeeded: {}",
        p["status"]
    );
    k.ok(
        &["wait", "--for=condition=Ready", "pod/slow", "--timeout=60s"],
        None,
    )?;
    ensure!(started.elapsed() >= Duration::from_secs(4));

    // Termination messages: from the file, and from the log when the file is empty.
    let messages = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: msg-file}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    command: [sh, -c, 'echo disk full > /dev/termination-log; exit 3']\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: msg-log}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    terminationMessagePolicy: FallbackToLogsOnError\n    command: [sh, -c, 'echo last words; exit 2']\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&messages))?;
    for (pod, want) in [("msg-file", "disk full\n"), ("msg-log", "last words\n")] {
        let msg = wait_for("a termination message", Duration::from_secs(60), || {
            let p = c.pod(pod)?;
            let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
            Ok(t.is_object().then(|| t["message"].clone()))
        })?;
        ensure!(msg == want, "{pod}: message {msg}");
    }

    // activeDeadlineSeconds fails the pod; a pod whose sidecar outlives its main container
    // completes.
    let deadline = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: deadline}}\nspec:\n  activeDeadlineSeconds: 3\n  containers:\n  - name: app\n    image: {reg}/busybox:1.36\n    command: [sleep, '3600']\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: job-like}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - name: side\n    image: {reg}/busybox:1.36\n    restartPolicy: Always\n    command: [sleep, '3600']\n  containers:\n  - name: work\n    image: {reg}/busybox:1.36\n    command: [sh, -c, 'sleep 1']\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&deadline))?;
    let p = wait_for("deadline to fail", Duration::from_secs(60), || {
        let p = c.pod("deadline")?;
        Ok((p["status"]["phase"] == "Failed").then_some(p))
    })?;
    ensure!(
        p["status"]["reason"] == "DeadlineExceeded",
        "status: {}",
        p["status"]
    );
    wait_for("job-like to succeed", Duration::from_secs(60), || {
        Ok((c.pod("job-like")?["status"]["phase"] == "Succeeded").then_some(()))
    })?;

    // shareProcessNamespace: one container sees the other's processes, under a PID 1 of the
    // pod's own; hostPID sees the node's.
    let pids = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: shared}}\nspec:\n  shareProcessNamespace: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    image: {reg}/busybox:1.36\n    command: [sh, -c, 'exec sleep 3601']\n  - name: b\n    image: {reg}/busybox:1.36\n    command: [sh, -c, 'exec sleep 3602']\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: hostpid}}\nspec:\n  hostPID: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    image: {reg}/busybox:1.36\n    command: [sh, -c, 'exec sleep 3603']\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&pids))?;
    for pod in ["shared", "hostpid"] {
        k.ok(
            &[
                "wait",
                "--for=condition=Ready",
                &format!("pod/{pod}"),
                "--timeout=60s",
            ],
            None,
        )?;
    }
    let ps = k.ok(
        &["exec", "shared", "-c", "b", "--", "ps", "-o", "pid,args"],
        None,
    )?;
    ensure!(
        ps.contains("sleep 3601") && ps.contains("sleep 3602"),
        "the containers do not share their processes:\n{ps}"
    );
    ensure!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("__pause")),
        "PID 1 is not the pod's pause process:\n{ps}"
    );
    let ps = k.ok(&["exec", "hostpid", "--", "ps", "-o", "pid,args"], None)?;
    ensure!(
        ps.contains("skiff") && ps.contains("sleep 3603"),
        "hostPID does not see the node's processes:\n{ps}"
    );
    k.ok(&["delete", "pod", "shared", "hostpid", "--wait=true"], None)?;

    // A readiness gate holds Ready back until another component sets its condition.
    let gated = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: gated}}\nspec:\n  readinessGates: [{{conditionType: example.com/in-lb}}]\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    image: {reg}/busybox:1.36\n    command: [sleep, '3600']\n"
    );
    let out = k.output(&["apply", "-f", "-"], Some(&gated))?;
    ensure!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Warning"),
        "readinessGates are implemented: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready_of = |p: &serde_json::Value| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or_default()
    };
    wait_for(
        "the gate to hold Ready back",
        Duration::from_secs(60),
        || {
            let p = c.pod("gated")?;
            let r = ready_of(&p);
            Ok(
                (p["status"]["phase"] == "Running" && r["reason"] == "ReadinessGatesNotReady")
                    .then_some(()),
            )
        },
    )?;
    k.ok(
        &[
            "patch",
            "pod",
            "gated",
            "--subresource=status",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/status/conditions/-","value":{"type":"example.com/in-lb","status":"True"}}]"#,
        ],
        None,
    )?;
    wait_for(
        "Ready once the gate is True",
        Duration::from_secs(30),
        || Ok((ready_of(&c.pod("gated")?)["status"] == "True").then_some(())),
    )?;
    k.ok(&["delete", "pod", "gated", "--wait=true"], None)?;
    Ok(())
}
