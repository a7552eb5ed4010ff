"""A real CNCF distribution registry with token auth, and a small token server of our own.

The registry (``auth: token``) trusts one test key through its ``rootcertbundle``; the
token server, an ``http.server`` on a loopback port in a thread, checks HTTP basic
credentials and answers with a JWT signed by that key, granting what was asked for on
every repository. This is the flow GHCR, Docker Hub and Harbor use; nothing is mocked:
Stackyard's registry client talks to the real registry and the real token endpoint.
Both are stopped when the context ends (the registry by pid).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from stackyard.platform.components import ComponentSpec
from stackyard.platform.supervisor import spawn, stop, wait_ready
from tests.integration.conftest import free_port, require

SERVICE = "stackyard-test-registry"
ISSUER = "stackyard-test-token-server"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def libtrust_key_id(key: rsa.RSAPrivateKey) -> str:
    """The ``kid`` distribution looks a signing key up by (docker/libtrust's key ID)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass
class TokenServer:
    """Issues registry tokens for ``users`` (name -> password); counts what it answered."""

    key: rsa.RSAPrivateKey
    users: dict[str, str]
    port: int = 0
    issued: int = 0
    refused: int = 0
    # Actions no token grants, as a registry account without that permission (an ECR
    # policy without BatchDeleteImage): "delete" makes the registry refuse deletes.
    withheld: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a not in self.withheld]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": libtrust_key_id(self.key)}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                user = server.user_of(self.headers.get("Authorization", ""))
                if url.path != "/token" or user is None:
                    server.refused += 1
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"details": "wrong username or password"}')
                    return
                scopes = parse_qs(url.query).get("scope", [])
                server.issued += 1
                body = json.dumps({"token": server.token(user, scopes), "expires_in": 300})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def user_of(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password else None


@dataclass(frozen=True)
class TokenRegistry:
    endpoint: str
    username: str
    password: str
    tokens: TokenServer
    log_file: Path


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@contextmanager
def token_registry(directory: Path, username: str = "acme") -> Iterator[TokenRegistry]:
    """A registry with token auth on a free loopback port, and its token server, taking
    ``username`` (``AWS``: as ECR, for specs that log in with ``docker login -u AWS``)."""
    require("docker-registry")
    binary = shutil.which("docker-registry") or "docker-registry"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    password = secrets.token_urlsafe(16)
    tokens = TokenServer(key, {username: password})
    tokens.start()
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "token-ca.pem"
    bundle.write_bytes(_certificate(key))
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "auth": {
            "token": {
                "realm": tokens.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(bundle),
            }
        },
    }
    config_path = directory / "registry.yml"
    spec = ComponentSpec(
        name="token-registry",
        argv=(binary, "serve", str(config_path)),
        ready_url=f"http://127.0.0.1:{port}/v2/",
        ready_statuses=frozenset({401}),
        log_file=directory / "registry.log",
        install_hint="apt-get install docker-registry",
        files={config_path: json.dumps(config)},
    )
    kept = spawn(spec)
    try:
        wait_ready(kept, 20)
        yield TokenRegistry(f"127.0.0.1:{port}", username, password, tokens, spec.log_file)
    finally:
        stop(kept)
        tokens.stop()
