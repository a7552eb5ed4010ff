"""Pebble (an RFC 8555 test CA) and its DNS mock, on loopback, for HTTPS tests.

``Pebble.start`` runs ``pebble-challtestsrv`` (answers every A query with 127.0.0.1) and
``pebble``, validating on the ports Caddy's HTTP and HTTPS servers listen on, and waits
until both answer; ``stop`` ends them by pid. Pebble keeps no state between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import IO

import httpx

from ..router_contract import free_port


class Pebble:
    def __init__(
        self,
        directory: Path,
        *,
        http_port: int,
        tls_port: int,
        eab: dict[str, str] | None = None,
        validity: int | None = None,
    ) -> None:
        """``eab``: key id -> HMAC key (base64url); with it Pebble refuses an account
        without that External Account Binding. ``validity``: the seconds a certificate is
        valid for (Pebble's ``certificateValidityPeriod``; its default is 5 years)."""
        for binary in ("pebble", "pebble-challtestsrv", "openssl"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed: run scripts/setup-host first")
        self.directory = directory
        self.http_port, self.tls_port = http_port, tls_port
        self.acme_port, self.management_port = free_port(), free_port()
        self.dns_port, self.dns_management_port = free_port(), free_port()
        self.cert = directory / "pebble-cert.pem"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.eab = eab or {}
        self.validity = validity

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def start(self) -> Pebble:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory / "pebble-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(key), "-out", str(self.cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        config = self.directory / "pebble.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.acme_port}",
                        "managementListenAddress": f"127.0.0.1:{self.management_port}",
                        "certificate": str(self.cert),
                        "privateKey": str(key),
                        "httpPort": self.http_port,
                        "tlsPort": self.tls_port,
                        **({"certificateValidityPeriod": self.validity} if self.validity else {}),
                        **(
                            {
                                "externalAccountBindingRequired": True,
                                "externalAccountMACKeys": self.eab,
                            }
                            if self.eab
                            else {}
                        ),
                    }
                }
            )
        )
        with (self.directory / "pebble.log").open("ab") as log:
            self._spawn(config, log)
        self._wait(self.directory_url, verify=True)
        return self

    def _spawn(self, config: Path, log: IO[bytes]) -> None:
        management = f"127.0.0.1:{self.dns_management_port}"
        dns = ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
               "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
               "-tlsalpn01", "", "-management", management]  # fmt: skip
        self.processes.append(subprocess.Popen(dns, stdout=log, stderr=log))
        self._wait(f"http://127.0.0.1:{self.dns_management_port}/", verify=False)
        # No random sleep before validating, no rejected nonces: the tests stay quick and
        # deterministic. Everything else is Pebble's default behaviour.
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        ca = ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"]
        self.processes.append(subprocess.Popen(ca, stdout=log, stderr=log, env=env))

    def _wait(self, url: str, *, verify: bool, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        context = ssl.create_default_context(cafile=str(self.cert)) if verify else False
        while True:
            try:
                httpx.get(url, verify=context, timeout=2, trust_env=False)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{url} did not answer within {within} s") from None
                time.sleep(0.1)

    def roots(self) -> Path:
        """Pebble's root and intermediate for a client's trust store (new on every run)."""
        path = self.directory / "pebble-roots.pem"
        context = ssl.create_default_context(cafile=str(self.cert))
        base = f"https://127.0.0.1:{self.management_port}"
        with httpx.Client(verify=context, timeout=5, trust_env=False) as client:
            pems = [client.get(f"{base}/{kind}/0").text for kind in ("roots", "intermediates")]
        path.write_text("".join(pems))
        return path

    def point(self, host: str, address: str) -> None:
        """Make the DNS mock answer ``address`` for ``host`` (a loopback address)."""
        if not address.startswith("127."):
            raise ValueError(f"tests point names at 127.0.0.0/8 only, not {address}")
        httpx.post(
            f"http://127.0.0.1:{self.dns_management_port}/add-a",
            json={"host": f"{host}.", "addresses": [address]},
            timeout=5,
            trust_env=False,
        ).raise_for_status()

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        self.processes.clear()
