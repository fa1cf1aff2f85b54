"""Drives a skiff cluster with the Python `kubernetes` client from PyPI, unchanged.

usage: python_client.py KUBECONFIG IMAGE

Exits non-zero with a message naming the step that failed. Each step checks what the server
answered, not only that it answered.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from openapi_spec_validator import validate


def step(name):
    print(f"python client: {name}", flush=True)


def main():
    kubeconfig, image = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    ns = "py-client"

    step("create namespace")
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    assert v1.read_namespace(ns).status.phase == "Active"

    step("watch configmaps while creating, patching and deleting one")
    events = []
    w = watch.Watch()

    def watcher():
        for ev in w.stream(v1.list_namespaced_config_map, ns, timeout_seconds=20):
            events.append((ev["type"], ev["object"].metadata.name, dict(ev["object"].data or {})))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(1)

    step("create configmaps")
    for i in range(3):
        v1.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"app": "py", "idx": str(i)}),
                data={"k": f"v{i}"},
            ),
        )
    try:
        v1.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm-0"))
        )
        raise AssertionError("a duplicate create must fail")
    except ApiException as e:
        assert e.status == 409, e

    step("list with label selectors")
    got = v1.list_namespaced_config_map(ns, label_selector="app=py,idx in (0,2)")
    assert sorted(c.metadata.name for c in got.items) == ["cm-0", "cm-2"], got.items
    assert got.metadata.resource_version

    step("patch (strategic merge and json patch)")
    v1.patch_namespaced_config_map("cm-0", ns, {"data": {"extra": "x"}})
    v1.patch_namespaced_config_map(
        "cm-0", ns, [{"op": "replace", "path": "/data/k", "value": "changed"}]
    )
    cm = v1.read_namespaced_config_map("cm-0", ns)
    assert cm.data == {"k": "changed", "extra": "x"}, cm.data

    step("update with a stale resourceVersion is a conflict")
    stale = v1.read_namespaced_config_map("cm-1", ns)
    v1.patch_namespaced_config_map("cm-1", ns, {"data": {"k": "newer"}})
    stale.data = {"k": "older"}
    try:
        v1.replace_namespaced_config_map("cm-1", ns, stale)
        raise AssertionError("a stale update must fail")
    except ApiException as e:
        assert e.status == 409, e

    step("delete")
    v1.delete_namespaced_config_map("cm-0", ns)
    t.join(timeout=25)
    kinds = [e[0] for e in events if e[1] == "cm-0"]
    assert kinds[0] == "ADDED" and "MODIFIED" in kinds and kinds[-1] == "DELETED", events

    step("run a pod and read its log")
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="py-pod"),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(
                    name="c", image=image, command=["sh", "-c", "echo from-python-client"]
                )
            ],
        ),
    )
    v1.create_namespaced_pod(ns, pod)
    deadline = time.time() + 90
    phase = None
    while time.time() < deadline:
        phase = v1.read_namespaced_pod("py-pod", ns).status.phase
        if phase == "Succeeded":
            break
        time.sleep(0.5)
    assert phase == "Succeeded", f"pod phase {phase}"
    log = v1.read_namespaced_pod_log("py-pod", ns)
    assert "from-python-client" in log, log

    step("errors are Status objects")
    try:
        v1.read_namespaced_pod("nope", ns)
        raise AssertionError("reading a missing pod must fail")
    except ApiException as e:
        assert e.status == 404 and "not found" in e.body, e.body

    step("delete the namespace")
    v1.delete_namespace(ns)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            v1.read_namespace(ns)
        except ApiException as e:
            if e.status == 404:
                break
        time.sleep(0.5)
    else:
        raise AssertionError("namespace was not removed")
    step("the OpenAPI v2 and v3 documents pass openapi-spec-validator")
    api = client.ApiClient()

    def raw(path):
        # Through the client's own request path, with its authentication.
        method, url, headers, _, _ = api.param_serialize(
            "GET", path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = api.call_api(method, url, header_params=headers)
        resp.read()
        return json.loads(resp.data)

    v2 = raw("/openapi/v2")
    assert v2["swagger"] == "2.0" and "io.k8s.api.core.v1.Pod" in v2["definitions"], list(v2)
    validate(v2)
    gvs = raw("/openapi/v3")["paths"]
    assert "apis/apps/v1" in gvs, gvs
    for gv in gvs:
        validate(raw(f"/openapi/v3/{gv}"))
    print("python client: all steps passed", flush=True)


if __name__ == "__main__":
    main()
