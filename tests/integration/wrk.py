"""wrk as a load generator for zero-downtime tests and benchmarks, against 127.0.0.1 only.

``Load`` runs wrk in the background for at most ``seconds``; ``stop`` ends it early with
SIGINT (wrk then prints its summary as at the end of a run), so a test can keep the load
on for exactly as long as a slow machine needs, and no longer than the bound.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# wrk resolves the URL's host through this function: every connection goes to 127.0.0.1.
PIN_LOOPBACK = """
function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end
"""


@dataclass
class WrkResult:
    requests: int = 0
    non2xx: int = 0
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0
    latency_max: str = ""
    seconds: float = 0.0
    raw: str = ""

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def per_1000(self) -> float:
        return 1000 * self.errors / self.requests if self.requests else 0.0


def parse_wrk(text: str) -> WrkResult:
    result = WrkResult(raw=text)
    found = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    if found is None:
        raise RuntimeError(f"wrk printed no request count:\n{text}")
    result.requests = int(found[1])
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[found[3]]
    result.seconds = float(found[2]) * scale
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result.non2xx = int(found[1]) if found else 0
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if found:
        result.connect, result.read, result.write, result.timeout = map(int, found.groups())
    found = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", text)
    result.latency_max = found[1] if found else "?"
    return result


class Load:
    """A bounded wrk run in the background (``threads`` x ``connections``, each request
    given ``timeout`` seconds)."""

    def __init__(
        self,
        url: str,
        seconds: float,
        *,
        threads: int = 2,
        connections: int = 16,
        timeout: float = 5,
        tail: float = 0,
        pin: Path | None = None,
    ) -> None:
        """``tail``: seconds of load ``stop`` keeps on before it ends the run (a request to
        a task stopped at the end of the work a test loads would fail after it). ``pin``: a
        directory for a wrk script that sends every connection to 127.0.0.1, whatever host
        the URL names (a host route's name, with its SNI and Host header)."""
        if pin is None and not url.startswith(("http://127.", "http://localhost")):
            raise ValueError(f"load goes to 127.0.0.0/8 only, not {url}")
        self.seconds = seconds
        self.tail = tail
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s",
                "--timeout", f"{timeout:g}s", url]  # fmt: skip
        if pin is not None:
            script = pin / "pin-loopback.lua"
            script.write_text(PIN_LOOPBACK)
            argv[1:1] = ["-s", str(script)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.started = time.monotonic()

    def stop(self) -> WrkResult:
        """End the load after its ``tail`` (or take its result if it already ended)."""
        time.sleep(self.tail)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self) -> WrkResult:
        """Wait for the load's own end, at most its bound plus a margin."""
        try:
            output, _ = self.process.communicate(timeout=self.seconds + 30)
        finally:
            self.kill()
        return parse_wrk(output)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
