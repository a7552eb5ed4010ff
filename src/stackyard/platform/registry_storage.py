"""The managed registry's files: its repositories, their manifests, and its blobs.

CNCF distribution keeps everything under ``docker/registry/v2`` of its root directory:
``blobs/sha256/<2 hex>/<hex>/data`` (content, written once, renamed into place) and
``repositories/<name>/`` (``_manifests/revisions/sha256/<hex>/link`` for every manifest the
repository holds, ``_manifests/tags/<tag>/...`` for tags, ``_layers/`` links and
``_uploads/`` in progress). A deleted manifest keeps its folder and loses its ``link``.
Retention lists the manifests here (the API has no listing of untagged ones), backup
copies the links before the blobs, and disk reports add the blobs up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

V2 = Path("docker") / "registry" / "v2"


def storage_root(data_dir: Path) -> Path:
    """Where the platform's registry keeps its files (see components.registry_config)."""
    return data_dir / "registry" / "data" / V2


def repositories(root: Path) -> list[str]:
    """Every repository name (``shop`` or ``team/shop``) that has a ``_manifests`` folder."""
    base = root / "repositories"
    if not base.is_dir():
        return []
    names = []
    for folder, subfolders, _files in os.walk(base):
        if "_manifests" in subfolders:
            names.append(Path(folder).relative_to(base).as_posix())
        # Below a repository only its own folders (``_layers``...) follow: do not descend.
        subfolders[:] = [s for s in subfolders if not s.startswith("_")]
    return sorted(names)


def manifest_digests(root: Path, repository: str) -> frozenset[str]:
    """The digests of every manifest ``repository`` holds, tagged or not."""
    revisions = root / "repositories" / repository / "_manifests" / "revisions"
    found = set()
    if revisions.is_dir():
        for algorithm in revisions.iterdir():
            for entry in algorithm.iterdir():
                if (entry / "link").is_file():
                    found.add(f"{algorithm.name}:{entry.name}")
    return frozenset(found)


def metadata_files(root: Path) -> Iterator[Path]:
    """The link files of every repository (not uploads in progress), relative to ``root``."""
    base = root / "repositories"
    if not base.is_dir():
        return
    for folder, subfolders, files in os.walk(base):
        subfolders[:] = sorted(s for s in subfolders if s != "_uploads")
        for name in sorted(files):
            yield (Path(folder) / name).relative_to(root)


def blob_files(root: Path) -> Iterator[Path]:
    """Every blob's ``data`` file, relative to ``root``."""
    base = root / "blobs"
    if not base.is_dir():
        return
    for folder, subfolders, files in os.walk(base):
        subfolders.sort()
        if "data" in files:
            yield (Path(folder) / "data").relative_to(root)


def blob_bytes(root: Path) -> int:
    """The bytes the registry's blobs take (their sizes, not the disk blocks)."""
    return sum((root / path).stat().st_size for path in blob_files(root))
