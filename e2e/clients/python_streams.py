"""Exec and port-forward with the Python kubernetes client (WebSocket, v4.channel.k8s.io).

Usage: python_streams.py KUBECONFIG
Expects pod `shell` (busybox, sleeping) and pod `web` (busybox httpd on 8080) in `default`.
Prints "all steps passed" at the end; any failure raises.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def get_through(pf, port, request=b"GET / HTTP/1.0\r\nHost: web\r\n\r\n"):
    sock = pf.socket(port)
    sock.setblocking(True)
    if request:
        sock.sendall(request)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data.decode()


def main():
    config.load_kube_config(sys.argv[1])
    api = client.CoreV1Api()

    out = stream(
        api.connect_get_namespaced_pod_exec,
        "shell",
        "default",
        command=["sh", "-c", "echo py-exec-$((40+2))"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert out == "py-exec-42\n", f"exec said {out!r}"
    print("exec ok")

    pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports="8080")
    answer = get_through(pf, 8080)
    assert answer.startswith("HTTP/1.") and answer.endswith("hello-from-pod\n"), answer
    assert pf.error(8080) is None, pf.error(8080)
    pf.close()
    print("port-forward ok")

    pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports="9")
    # Nothing is sent: the server may already have closed the connection it could not make.
    answer = get_through(pf, 9, request=b"")
    err = pf.error(9)
    assert answer == "" and err and "localhost:9" in err, (answer, err)
    pf.close()
    print("port-forward to a closed port reported:", err)
    print("all steps passed")


main()
