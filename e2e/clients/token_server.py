"""A registry token server (the Docker registry v2 bearer-token flow) for the e2e tests.

Usage: token_server.py PORT KEY.pem CERT.pem ISSUER USER:PASSWORD

GET /token?service=S&scope=repository:NAME:ACTIONS answers {"token": JWT}. The JWT is signed
RS256 with KEY.pem (through openssl, so no Python packages are needed) and carries CERT.pem in
its x5c header, which docker-registry checks against its rootcertbundle. A request with the
right basic credentials is granted the actions it asks for; any other gets a token with no
access, so the registry refuses it.
"""

import base64
import json
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT, KEY, CERT, ISSUER, CREDS = sys.argv[1:6]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der():
    pem = open(CERT).read()
    body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    return body


def sign(message):
    return subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", KEY],
        input=message,
        capture_output=True,
        check=True,
    ).stdout


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token":
            self.send_error(404)
            return
        query = parse_qs(url.query)
        service = query.get("service", [""])[0]
        auth = self.headers.get("Authorization", "")
        granted = auth.startswith("Basic ") and base64.b64decode(auth[6:]).decode() == CREDS
        access = []
        if granted:
            for scope in query.get("scope", []):
                kind, name, actions = scope.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [cert_der()]}
        claims = {
            "iss": ISSUER,
            "sub": CREDS.split(":")[0] if granted else "",
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        )
        token = signing_input + "." + b64url(sign(signing_input.encode()))
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("token server: " + (fmt % args) + "\n")


ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler).serve_forever()
