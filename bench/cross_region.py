"""Cross-region release: Stackyard's copy by digest against pull, tag and push.

Three real CNCF distribution registries on loopback (free ports, temporary data dirs,
stopped by pid): the home registry, where the build pushed, and one destination each for
the two ways of getting the image into "another region's" registry, so both start empty:
(a) ``RegistryClient.copy`` (HEAD each blob, send only the missing ones, the manifest
bytes last) and (b) ``docker pull`` + ``docker tag`` + ``docker push``, what a
``release.yml`` copying to ``$REGIONAL_ECR_IMAGE_URL`` does.

Two releases, side by side in one run: the first copies an app image built FROM
python:3.11-slim; the second a new build of the same app (the same base layer, a new top
layer), which each destination now has the base of. Times are wall clock; bytes come from
the registries' access logs (blob GETs from home, completed blob uploads to the
destination). The docker engine keeps python:3.11-slim (a shared base image), so its pull
never downloads the base layer: the docker path is measured at its most favourable.
Usage:
    .venv/bin/python -m bench.cross_region [--runs 3] [--mib 4] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.promotion import Registry, Traffic, mib, running_registry, traffic
from bench.report import update_section
from stackyard.images.registry import RegistryClient

REPOSITORY = "bench/app"


@dataclass
class Release:
    label: str
    tag: str
    sizes: dict[str, int] = field(default_factory=dict)
    layer_bytes: int = 0
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    our_traffic: list[Traffic] = field(default_factory=list)
    their_traffic: list[Traffic] = field(default_factory=list)


def client(registry: Registry) -> RegistryClient:
    return RegistryClient(registry.endpoint, username=registry.username,
                          password=registry.password)  # fmt: skip


def build_and_push(home: Registry, release: Release, size_mib: int, created: list[str]) -> None:
    """An app image FROM python:3.11-slim with a new random top layer, pushed home."""
    image = f"{home.endpoint}/{REPOSITORY}:{release.tag}"
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "app.bin").write_bytes(secrets.token_bytes(size_mib << 20))
        (Path(context) / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY app.bin /app.bin\n")
        home.docker("build", "--network", "host", "-q", "-t", image, context)
    created.append(image)
    home.docker("push", image)
    with client(home) as home_client:
        document = json.loads(home_client.get_manifest(REPOSITORY, release.tag).raw)
    for descriptor in [document["config"], *document["layers"]]:
        release.sizes[descriptor["digest"]] = int(descriptor["size"])
    release.layer_bytes = sum(int(layer["size"]) for layer in document["layers"])


def with_stackyard(
    home: Registry,
    destination: Registry,
    release: Release,
    run: int,
    clients: tuple[RegistryClient, RegistryClient],
) -> str:
    """The copy through clients made once, as the platform keeps them (making one loads
    TLS settings, about 0.1 s, which a running platform does not pay per release)."""
    source, target = clients
    home_offset, dest_offset = home.log_size(), destination.log_size()
    started = time.perf_counter()
    digest = source.copy(REPOSITORY, release.tag, to_repository=f"{REPOSITORY}{run}",
                         to_reference="prod-us", target=target)  # fmt: skip
    release.ours.append(time.perf_counter() - started)
    time.sleep(0.05)  # let the registries write their access log lines
    release.our_traffic.append(moved(home, home_offset, destination, dest_offset, release))
    return digest


def with_docker(home: Registry, destination: Registry, release: Release, run: int) -> str:
    source = f"{home.endpoint}/{REPOSITORY}:{release.tag}"
    target = f"{destination.endpoint}/{REPOSITORY}{run}:prod-us"
    home.docker("rmi", source, check=False)  # as on a build agent without this image
    home_offset, dest_offset = home.log_size(), destination.log_size()
    started = time.perf_counter()
    home.docker("pull", "-q", source)
    home.docker("tag", source, target)
    output = destination.docker("push", target)
    release.theirs.append(time.perf_counter() - started)
    time.sleep(0.05)
    release.their_traffic.append(moved(home, home_offset, destination, dest_offset, release))
    destination.docker("rmi", target, check=False)
    return output.split("digest: ", 1)[1].split()[0]


def moved(
    home: Registry, home_offset: int, destination: Registry, dest_offset: int, release: Release
) -> Traffic:
    pulled = traffic(home.entries_since(home_offset), release.sizes)
    pushed = traffic(destination.entries_since(dest_offset), release.sizes)
    return Traffic(
        requests=pulled.requests + pushed.requests,
        blob_upload_requests=pushed.blob_upload_requests,
        bytes_pushed=pushed.bytes_pushed,
        bytes_pulled=pulled.bytes_pulled,
        manifest_puts=pushed.manifest_puts,
    )


def rows(release: Release) -> list[str]:
    ours, theirs = statistics.median(release.ours), statistics.median(release.theirs)

    def row(name: str, times: list[float], t: Traffic) -> str:
        return (f"| {release.label} | {name} | {statistics.median(times) * 1000:.0f} | "
                f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f} | {mib(t.bytes_pulled)} | "
                f"{mib(t.bytes_pushed)} | {t.blob_upload_requests} | {t.requests} |")  # fmt: skip

    return [
        row("Stackyard copy by digest", release.ours, release.our_traffic[-1]),
        row("docker pull + tag + push", release.theirs, release.their_traffic[-1]),
        f"| {release.label} | **speed-up** | **{theirs / ours:.1f}x** | | | | | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=4, help="size of the app's own layer")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    first, second = Release("first release", "v1"), Release("second release", "v2")
    created: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-") as tmp, ExitStack() as stack:
        home = stack.enter_context(running_registry(Path(tmp) / "home"))
        try:
            build_and_push(home, first, args.mib, created)
            build_and_push(home, second, args.mib, created)
            for run in range(args.runs):
                # Fresh destination registries each run: docker remembers which registry has
                # a layer and mounts it from another repository there, which is not a
                # first copy to another region.
                with ExitStack() as destinations:
                    ours, theirs = (
                        destinations.enter_context(running_registry(Path(tmp) / f"{name}{run}"))
                        for name in ("ours", "theirs")
                    )
                    clients = (
                        destinations.enter_context(client(home)),
                        destinations.enter_context(client(ours)),
                    )
                    for release in (first, second):  # the second finds the first's base
                        digest = with_stackyard(home, ours, release, run, clients)
                        assert digest == with_docker(home, theirs, release, run)
        finally:
            for image in created:
                home.docker("rmi", image, check=False)
    table = [
        "| release | copy | median ms | range ms | bytes pulled | bytes pushed "
        "| blob uploads | requests |",
        "|---|---|---|---|---|---|---|---|",
        *rows(first),
        *rows(second),
    ]
    body = (
        "## Cross-region release: copy by digest\n\n"
        "Goal: the second release moves only the changed layers, and is at least 3x faster "
        "than `docker pull` + `docker tag` + `docker push` to the second registry. "
        f"An app image FROM python:3.11-slim ({mib(first.layer_bytes)} of compressed "
        f"layers; the app's own layer is {args.mib} MiB of random bytes, new in each build) "
        "goes from the home registry to a second one; the second release is a new build "
        "whose base layer the destination has from the first. "
        f"{args.runs} runs, each into two fresh destination registries; bytes and "
        "requests from the registries' access logs (last run). The docker engine keeps "
        "python:3.11-slim, so the docker pull never downloads the base layer (its most "
        "favourable case); Stackyard streams each missing blob from registry to registry "
        "and sends the manifest bytes last, so the digest is the same in both. Its registry "
        "clients are made once, as the platform keeps them.\n\n"
        + "\n".join(table)
        + "\n\nReproduce: `.venv/bin/python -m bench.cross_region "
        f"--runs {args.runs} --mib {args.mib}`"
    )
    print(body)
    if not args.no_write:
        update_section("cross-region", body)


if __name__ == "__main__":
    main()
