"""Growing logs rotate by size, copy then truncate, keeping a few generations."""

from __future__ import annotations

from pathlib import Path

from stackyard.platform.logrotation import (
    GrowingLog,
    Rotation,
    growing_files,
    plan_rotations,
    rotate,
)


def test_only_logs_over_their_size_are_due() -> None:
    logs = (GrowingLog("platform.log", max_bytes=100, keep=2), GrowingLog("access/*.log", 50))
    sizes = {"/l/platform.log": 101, "/l/access/shop-dev.log": 50, "/l/access/web-dev.log": 51}
    assert plan_rotations(sizes, logs) == [
        Rotation("/l/platform.log", 2),
        Rotation("/l/access/web-dev.log", 3),
    ]


def test_rotation_keeps_the_writer_appending_and_drops_the_oldest_generation(
    tmp_path: Path,
) -> None:
    live = tmp_path / "registry.log"
    live.write_text("third\n")
    (tmp_path / "registry.log.1").write_text("second\n")
    (tmp_path / "registry.log.2").write_text("first\n")
    with live.open("ab") as writer:  # as the supervisor opens a component's log
        rotate(Rotation(str(live), keep=2))
        writer.write(b"fourth\n")
    assert live.read_text() == "fourth\n"
    assert (tmp_path / "registry.log.1").read_text() == "third\n"
    assert (tmp_path / "registry.log.2").read_text() == "second\n"
    assert not (tmp_path / "registry.log.3").exists()


def test_growing_files_are_found_by_pattern(tmp_path: Path) -> None:
    (tmp_path / "caddy-2.log").write_text("12345")
    (tmp_path / "builds").mkdir()
    assert growing_files(tmp_path) == {str(tmp_path / "caddy-2.log"): 5}
