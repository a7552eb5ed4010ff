"""Run the control plane in this process: the store, the services and the API server, on
top of the data plane (registry, Caddy, upstream responder), which it adopts or starts.

Called by ``stackyard up``. Ctrl-C or SIGTERM stops the API server and the services, then
removes the state file. The data plane keeps serving the apps; `stackyard down --all`
stops it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from stackyard.access.people import PeopleService
from stackyard.access.tokens import TokenMaskFilter
from stackyard.api.app import ApiContext, create_app
from stackyard.control_socket import Message
from stackyard.pipeline.services import build_services, open_state
from stackyard.platform.acme import with_eab_hmac
from stackyard.platform.components import registry_login
from stackyard.platform.credentials import ensure_token
from stackyard.platform.dataplane import DataplaneWatch, ensure_dataplane
from stackyard.platform.public_api import publish_api, refresh_router, republish_api
from stackyard.platform.registry_gc import collect_registry_garbage
from stackyard.platform.state import DataplaneRecord, PlatformState
from stackyard.platform.supervisor import check_ports_free
from stackyard.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn's server, telling us once it is listening."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)  # type: ignore[arg-type]
        if self.started:
            self._on_ready()


def serve(settings: Settings, *, on_ready: Callable[[PlatformState], None]) -> None:
    """Start everything, call ``on_ready`` once all answer, and block until stopped."""
    started = time.time()
    for directory in (settings.data_dir, settings.logs_dir, settings.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    settings.run_dir.chmod(0o700)
    check_ports_free([("API", settings.host, settings.api_port)])
    settings = with_eab_hmac(settings)  # the ACME EAB HMAC key, unsealed (never logged)
    state_store = open_state(settings)
    dataplane = ensure_dataplane(settings)
    services = build_services(
        settings,
        state_store.sessions,
        registry_login(settings),
        collect_garbage=lambda: collect_registry_garbage(
            settings, binary=shutil.which("docker-registry")
        ),
    )
    state = PlatformState(
        pid=_own_pid(),
        api_url=settings.api_url,
        registry=settings.registry_endpoint,
        router_admin=" ".join(f"unix:{path}" for path in settings.caddy_admin_sockets),
        token_file=str(settings.token_file),
        children=_dataplane_pids(settings, dataplane),
        started_at=started,
    )

    def dataplane_changed() -> None:
        # Caddy or the keeper was started again: every stage checks its route at once.
        state.children.clear()
        state.children.update(_dataplane_pids(settings, None))
        state.write(settings.state_file)
        refresh_router(services.controller.router)
        services.controller.wake_all()
        republish_api(settings, services.controller.router)

    watch = DataplaneWatch(settings, on_change=dataplane_changed)
    try:
        token = bootstrap_token(settings, services.people)
        mask_tokens_in_logs([token, settings.acme_eab_hmac])
        services.verify_engine()
        refresh_router(services.controller.router)
        services.start()
        if settings.public_api:
            publish_api(settings, services.controller.router)  # a failure stops `up`
        else:
            republish_api(settings, services.controller.router)
        components = {name: f"pid {pid}" for name, pid in state.children.items()}
        app = create_app(ApiContext(settings, token, components, services))

        def ready() -> None:
            state.write(settings.state_file)
            on_ready(state)

        watch.start()
        config = uvicorn.Config(
            app, host=settings.host, port=settings.api_port, log_level="warning", lifespan="off"
        )
        # uvicorn's handlers exist once its config is made
        mask_tokens_in_logs([token, settings.acme_eab_hmac])
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal;
            # turning it into an exception lets the services below stop too.
            _Server(config, ready).run()
        except (_Stop, KeyboardInterrupt):
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        watch.stop()
        services.close()
        state_store.close()
        current = PlatformState.read(settings.state_file)
        if current is not None and current.pid == _own_pid():
            settings.state_file.unlink(missing_ok=True)


def bootstrap_token(settings: Settings, people: PeopleService) -> str:
    """The bootstrap admin token of ``admin-token`` (made at first start), or "" once it
    was revoked: then the file goes too, and the team logs in with their own tokens."""
    if people.bootstrap_revoked():
        settings.token_file.unlink(missing_ok=True)
        return ""
    return ensure_token(settings.token_file)


def mask_tokens_in_logs(extra: list[str]) -> None:
    """Mask tokens in everything the platform logs: a root handler (the platform's own
    loggers, at WARNING as before) and uvicorn's handlers, each with the mask filter."""
    root = logging.getLogger()
    if not any(isinstance(f, TokenMaskFilter) for h in root.handlers for f in h.filters):
        stream = logging.StreamHandler()
        stream.setLevel(logging.WARNING)
        root.addHandler(stream)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, TokenMaskFilter) for f in handler.filters):
                handler.addFilter(TokenMaskFilter(extra))


def _dataplane_pids(settings: Settings, status: Message | None) -> dict[str, int]:
    """The keeper's pid and its components', by name (for `status` and the benchmarks)."""
    if status is not None:
        components = {name: int(c["pid"]) for name, c in status["components"].items()}
        return {"dataplane": int(status["pid"]), **components}
    record = DataplaneRecord.read(settings.dataplane_file)
    return {} if record is None else {"dataplane": record.pid, **record.components}


def _own_pid() -> int:
    return os.getpid()


class _Stop(Exception):
    """SIGTERM arrived: stop the platform."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop
