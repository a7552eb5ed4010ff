"""Promotion dev → staging: Stackyard's manifest retag against pull, tag and push.

Side by side in one run, against a real CNCF distribution registry started here (free
loopback port, temporary data dir, stopped by pid): (a) ``RegistryClient.retag`` and
(b) TinyStacks' default release script, ``docker pull IMAGE:dev && docker tag ... &&
docker push IMAGE:staging``, with the local image removed first so the pull really pulls,
as on a fresh build agent. Bytes and requests come from the registry's access log.
Usage:
    .venv/bin/python -m bench.promotion [--runs 5] [--skip-python] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import update_section
from stackyard.images.registry import RegistryClient
from stackyard.platform.components import plan_registry
from stackyard.platform.supervisor import spawn, stop, wait_ready
from stackyard.settings import Settings

ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<size>\d+|-)'
)
BLOB_GET = re.compile(r"/blobs/(sha256:[0-9a-f]{64})$")
UPLOAD_DONE = re.compile(r"/blobs/uploads/.*[?&]digest=sha256%3A([0-9a-f]{64})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    endpoint: str
    username: str
    password: str
    log_file: Path
    docker_env: dict[str, str]

    def log_size(self) -> int:
        return self.log_file.stat().st_size

    def entries_since(self, offset: int) -> list[re.Match[str]]:
        with self.log_file.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
        return list(ACCESS_LINE.finditer(text))

    def docker(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["docker", *args], env=self.docker_env, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


@contextmanager
def running_registry(directory: Path) -> Iterator[Registry]:
    settings = Settings(data_dir=directory / "data", registry_port=free_port())
    spec = plan_registry(settings, binary=shutil.which("docker-registry"))
    kept = spawn(spec)
    try:
        wait_ready(kept, 20)
        creds = json.loads((settings.data_dir / "registry-credentials.json").read_text())
        config = directory / "docker-config"
        config.mkdir()
        env = {**os.environ, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0"}
        registry = Registry(settings.registry_endpoint, creds["username"], creds["password"],
                            spec.log_file, env)  # fmt: skip
        subprocess.run(["docker", "login", registry.endpoint, "-u", registry.username,
                        "--password-stdin"], input=registry.password, text=True, env=env,
                       capture_output=True, check=True, timeout=60)  # fmt: skip
        yield registry
    finally:
        stop(kept)


@dataclass
class Traffic:
    """What one promotion asked of the registry, read from its access log."""

    requests: int = 0
    blob_upload_requests: int = 0  # POST/PATCH/PUT under /blobs/uploads/
    bytes_pushed: int = 0  # sizes of the blobs whose upload completed
    bytes_pulled: int = 0  # response bytes of blob GETs
    manifest_puts: int = 0


def traffic(entries: list[re.Match[str]], sizes: dict[str, int]) -> Traffic:
    result = Traffic()
    for entry in entries:
        method, uri, size = entry["method"], entry["uri"], entry["size"]
        result.requests += 1
        if "/blobs/uploads/" in uri:
            result.blob_upload_requests += 1
            done = UPLOAD_DONE.search(uri)
            if method == "PUT" and done:
                result.bytes_pushed += sizes.get("sha256:" + done.group(1), 0)
        elif method == "GET" and BLOB_GET.search(uri) and size != "-":
            result.bytes_pulled += int(size)
        elif method == "PUT" and "/manifests/" in uri:
            result.manifest_puts += 1
    return result


@dataclass
class Case:
    label: str
    repository: str
    sizes: dict[str, int] = field(default_factory=dict)
    image_bytes: int = 0
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    our_traffic: list[Traffic] = field(default_factory=list)
    their_traffic: list[Traffic] = field(default_factory=list)


def make_unique_image(registry: Registry, base: str | None, mib: int, name: str) -> str:
    """A one-layer image whose layer exists nowhere else locally (a random file inside).

    Removing it after the push then really empties the local cache for it, so a later
    ``docker pull`` downloads every byte, as on a fresh build agent.
    """
    with tempfile.TemporaryDirectory() as tmp:
        noise = Path(tmp) / "noise.bin"
        noise.write_bytes(secrets.token_bytes(mib << 20))
        if base is None:
            tarball = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "-C", tmp, "-cf", str(tarball), "noise.bin"], check=True)
            registry.docker("import", str(tarball), name)
            return name
        container = registry.docker("create", base, "/bin/true").strip()
        try:
            registry.docker("cp", str(noise), f"{container}:/noise.bin")
            export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE,
                                      env=registry.docker_env)  # fmt: skip
            subprocess.run(["docker", "import", "-", name], stdin=export.stdout, check=True,
                           env=registry.docker_env, capture_output=True)  # fmt: skip
            export.wait()
        finally:
            registry.docker("rm", "-f", container, check=False)
    return name


def prepare(registry: Registry, case: Case, base: str | None, mib: int) -> None:
    local = f"stackyard-bench-{case.repository.replace('/', '-')}:{secrets.token_hex(4)}"
    make_unique_image(registry, base, mib, local)
    remote = f"{registry.endpoint}/{case.repository}"
    registry.docker("tag", local, f"{remote}:dev")
    registry.docker("push", f"{remote}:dev")
    registry.docker("rmi", local, f"{remote}:dev")
    with RegistryClient(registry.endpoint, username=registry.username,
                        password=registry.password) as client:  # fmt: skip
        manifest = client.get_manifest(case.repository, "dev")
    document = json.loads(manifest.raw)
    for descriptor in [document["config"], *document["layers"]]:
        case.sizes[descriptor["digest"]] = int(descriptor["size"])
    case.image_bytes = sum(int(layer["size"]) for layer in document["layers"])


def promote_with_stackyard(registry: Registry, case: Case) -> None:
    offset = registry.log_size()
    started = time.perf_counter()
    with RegistryClient(registry.endpoint, username=registry.username,
                        password=registry.password) as client:  # fmt: skip
        client.retag(case.repository, "dev", "staging")
    case.ours.append(time.perf_counter() - started)
    time.sleep(0.05)  # let the registry finish writing its access log lines
    case.our_traffic.append(traffic(registry.entries_since(offset), case.sizes))


def promote_like_tinystacks(registry: Registry, case: Case) -> None:
    image = f"{registry.endpoint}/{case.repository}"
    registry.docker("rmi", f"{image}:dev", f"{image}:staging", check=False)  # fresh agent
    offset = registry.log_size()
    started = time.perf_counter()
    registry.docker("pull", f"{image}:dev")
    registry.docker("tag", f"{image}:dev", f"{image}:staging")
    registry.docker("push", f"{image}:staging")
    case.theirs.append(time.perf_counter() - started)
    time.sleep(0.05)
    case.their_traffic.append(traffic(registry.entries_since(offset), case.sizes))
    registry.docker("rmi", f"{image}:dev", f"{image}:staging", check=False)


def mib(value: float) -> str:
    return f"{value / (1 << 20):.1f} MiB"


def rows(case: Case) -> list[str]:
    ours, theirs = statistics.median(case.ours), statistics.median(case.theirs)
    our_t, their_t = case.our_traffic[-1], case.their_traffic[-1]

    def row(name: str, times: list[float], t: Traffic) -> str:
        return (f"| {case.label} | {name} | {statistics.median(times) * 1000:.0f} | "
                f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f} | {t.requests} | "
                f"{t.blob_upload_requests} | {mib(t.bytes_pushed)} | {mib(t.bytes_pulled)} | "
                f"{t.manifest_puts} |")  # fmt: skip

    return [
        row("Stackyard `retag`", case.ours, our_t),
        row("pull + tag + push", case.theirs, their_t),
        f"| {case.label} | **speed-up** | **{theirs / ours:.1f}x** | | | | | | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-python", action="store_true", help="only the small image")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    specs: list[tuple[Case, str | None, int]] = [
        (Case("8 MiB random layer", "bench/small"), None, 8)
    ]
    if not args.skip_python:
        specs.append((Case("python:3.11-slim + 1 MiB", "bench/python"), "python:3.11-slim", 1))
    with (
        tempfile.TemporaryDirectory(prefix="stackyard-bench-") as tmp,
        running_registry(Path(tmp)) as registry,
    ):
        try:
            for case, base, size in specs:
                prepare(registry, case, base, size)
                for _ in range(args.runs):  # interleaved, so drift hits both alike
                    promote_with_stackyard(registry, case)
                    promote_like_tinystacks(registry, case)
        finally:
            for case, _, _ in specs:
                image = f"{registry.endpoint}/{case.repository}"
                registry.docker("rmi", f"{image}:dev", f"{image}:staging", check=False)
    table = [
        "| image | promotion | median ms | range ms | requests | blob upload requests "
        "| bytes pushed | layer bytes pulled | manifest PUTs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, _, _ in specs:
        table += rows(case)
    sizes = ", ".join(f"{case.label}: {mib(case.image_bytes)} of compressed layers"
                      for case, _, _ in specs)  # fmt: skip
    body = (
        "## Promotion dev → staging\n\n"
        "Goal: no layer bytes moved by Stackyard, and at least 5x faster than TinyStacks' "
        "release script (`docker pull IMAGE:dev && docker tag … && docker push "
        "IMAGE:staging`, local image removed first as on a fresh build agent). "
        f"{args.runs} runs each, interleaved, against the embedded registry on loopback; "
        "requests and bytes are read from the registry's access log (last run shown). "
        f"Image sizes: {sizes}.\n\n"
        + "\n".join(table)
        + "\n\nStackyard's retag is one manifest GET and one manifest PUT of the same bytes "
        "(plus the auth challenge): the new tag has the same digest, and no blob endpoint "
        "is touched. The pull path downloads every layer; its push then finds them in the "
        "registry, so it uploads nothing either, but pays the pull. The retag's time does not "
        "grow with the image: it is a few authenticated round trips (the registry checks a "
        "bcrypt hash, cost 5, on each), so the speed-up grows with the layers a pull moves."
        "\n\n"
        f"Reproduce: `.venv/bin/python -m bench.promotion --runs {args.runs}`"
    )
    print(body)
    if not args.no_write:
        update_section("promotion", body)


if __name__ == "__main__":
    main()
