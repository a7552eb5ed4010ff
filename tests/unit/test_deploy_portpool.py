"""The ports the deploy controller hands out: stage route ports and task ports."""

from __future__ import annotations

import socket

import pytest

from stackyard.deploy.portpool import route_port
from stackyard.errors import StackyardError

SPAN = (32000, 32999)  # away from 8000-8999, where platforms under test serve stages


def test_route_ports_of_new_stages_do_not_all_start_at_the_span_s_first_port() -> None:
    # Two platforms on one machine that pick a stage's port at the same moment, before
    # either's Caddy binds it, get the same one when both take the first free port.
    picked = {route_port(SPAN, ()) for _ in range(20)}
    assert len(picked) > 1, picked  # 20 picks of one port in 1000: chance 1e-57


def test_a_route_port_is_none_a_stage_holds() -> None:
    held = set(range(SPAN[0], SPAN[1] + 1, 2))  # every other port of the span
    picked = {route_port(SPAN, held) for _ in range(20)}
    assert picked
    assert not picked & held
    assert all(SPAN[0] < p <= SPAN[1] for p in picked)


def test_a_route_port_something_listens_on_is_not_picked() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listening = busy.getsockname()[1]
        with pytest.raises(StackyardError, match=f"no free stage port between {listening} "):
            route_port((listening, listening), ())


def test_no_free_route_port_names_the_span() -> None:
    with pytest.raises(StackyardError, match="no free stage port between 32000 and 32001"):
        route_port((32000, 32001), {32000, 32001})
