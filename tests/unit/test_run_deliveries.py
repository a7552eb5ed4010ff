"""A webhook delivery starts one run: the pipeline service itself (the real services over
a seeded SQLite store, bench/console_render.py's) answers a delivery it has a run for with
that run, through the store's unique index, whoever calls it."""

from __future__ import annotations

from pathlib import Path

from bench.console_render import console_yard


def test_the_same_delivery_gives_the_same_run_and_another_a_new_one(tmp_path: Path) -> None:
    with console_yard(tmp_path, stacks=1) as yard:
        runs = yard.services.runs
        first = runs.start_run("app-00", trigger="github push", delivery="d-1")
        again = runs.start_run("app-00", trigger="github push", delivery="d-1")
        other = runs.start_run("app-00", trigger="github push", delivery="d-2")
        plain = runs.start_run("app-00", trigger="api")  # no delivery: always a new run
        assert again.number == first.number
        assert other.number == first.number + 1
        assert plain.number == other.number + 1
        delivered = runs.delivered("app-00", "d-1")
        assert delivered is not None
        assert delivered.number == first.number
        assert runs.delivered("app-00", "d-3") is None
