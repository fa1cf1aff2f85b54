"""Exec and port-forward with the Python kubernetes client (WebSocket, v4.channel.k8s.io), and
every remote command subprotocol spoken on a raw WebSocket through the API (v5 with its close
signal, v4, the base64 variants, the first version), with an unknown one refused.

Usage: python_streams.py KUBECONFIG
Expects pod `shell` (busybox, sleeping) and pod `web` (busybox httpd on 8080) in `default`.
Prints "all steps passed" at the end; any failure raises.
"""

import base64
import json
import sys
import urllib.parse

import websocket
from kubernetes import client, config
from kubernetes.stream import portforward, stream


def raw_exec(host, protocol, command, stdin=None):
    """Runs `command` in pod shell over `protocol`; returns {channel: bytes} as received."""
    query = "&".join("command=" + urllib.parse.quote(c, safe="") for c in command)
    query += "&stdout=true&stderr=true"
    if stdin is not None:
        query += "&stdin=true"
    url = host.replace("http", "ws", 1) + "/api/v1/namespaces/default/pods/shell/exec?" + query
    ws = websocket.create_connection(url, subprotocols=[protocol])
    assert ws.subprotocol == protocol, (ws.subprotocol, protocol)
    b64 = "base64" in protocol
    if stdin is not None:
        if b64:
            ws.send("0" + base64.b64encode(stdin).decode())
        else:
            ws.send_binary(b"\x00" + stdin)
        if protocol.startswith("v5."):
            ws.send_binary(b"\xff\x00")
    got = {}
    while True:
        try:
            opcode, data = ws.recv_data(control_frame=False)
        except websocket.WebSocketConnectionClosedException:
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        if not data:
            continue
        if b64:
            channel, payload = int(chr(data[0])), base64.b64decode(data[1:])
        else:
            channel, payload = data[0], data[1:]
        got[channel] = got.get(channel, b"") + payload
    return got


def raw_protocols(host):
    got = raw_exec(host, "v5.channel.k8s.io", ["cat"], stdin=b"through v5\n")
    assert got.get(1) == b"through v5\n", got
    assert json.loads(got[3])["status"] == "Success", got

    for protocol in ["v4.base64.channel.k8s.io", "base64.channel.k8s.io", "channel.k8s.io", "v4.channel.k8s.io"]:
        got = raw_exec(host, protocol, ["sh", "-c", "echo out-" + protocol + "; echo err >&2"])
        assert got.get(1) == ("out-" + protocol + "\n").encode(), (protocol, got)
        assert got.get(2) == b"err\n", (protocol, got)
        if protocol.startswith("v4"):
            assert json.loads(got[3])["status"] == "Success", (protocol, got)
        else:
            # The first version says nothing on the error channel when all went well.
            assert 3 not in got, (protocol, got)
    got = raw_exec(host, "channel.k8s.io", ["sh", "-c", "exit 3"])
    assert b"exit code 3" in got.get(3, b""), got
    print("every subprotocol ok")

    try:
        websocket.create_connection(
            host.replace("http", "ws", 1) + "/api/v1/namespaces/default/pods/shell/exec?command=true&stdout=true",
            subprotocols=["v9.channel.k8s.io"],
        )
        raise AssertionError("an unknown subprotocol was accepted")
    except websocket.WebSocketBadStatusException as e:
        assert e.status_code == 403, e
    print("unknown subprotocol refused with 403")


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

    raw_protocols(client.Configuration.get_default_copy().host)
    print("all steps passed")


main()
