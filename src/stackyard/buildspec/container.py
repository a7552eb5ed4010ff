"""Commands in a build container: the :class:`CommandShell` builds and releases run in.

One container per run, from the build image. It holds the checkout at
``/codebuild/output/src`` (read-write), the artifacts directory, and the build's own
Docker API socket (the filtering proxy) at ``/var/run/docker.sock``; nothing else of the
host. Its limits are the build's (cpu, memory, processes; disk by :class:`DiskWatch`).
The runner's commands go to a small shell agent inside (agent.py), one at a time, each
in its own session, so the runner's semantics are the same as on the host.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import ClassVar

from stackyard.buildspec.agent import (
    AGENT_SCRIPT,
    STDERR,
    STDOUT,
    Fence,
    Frames,
    Messages,
    Reply,
    new_token,
    run_request,
    stop_request,
)
from stackyard.buildspec.process import TIMED_OUT_STATUS, Account, Command, CommandOutcome
from stackyard.buildspec.shell import TOOLS_DIR, CommandShell, OutputCallback
from stackyard.errors import ConfigError, StackyardError, UsageError
from stackyard.images.build_container import (
    LABEL_BUILD,
    LABEL_BUILD_PLATFORM,
    BuildContainer,
    BuildContainerSpec,
    Mount,
    Stream,
)
from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
from stackyard.images.dockerproxy.server import BuildProxy, ProxySocket
from stackyard.settings import DEFAULT_BUILD_IMAGE

SOURCE_MOUNT = PurePosixPath("/codebuild/output/src")
ARTIFACTS_MOUNT = PurePosixPath("/codebuild/output/artifacts")
DOCKER_SOCKET = "/var/run/docker.sock"
TOOLS_MOUNT = "/usr/local/lib/stackyard/tools"  # the aws stand-in, read-only
_AGENTS = PurePosixPath("/run/stackyard")
_READY_TIMEOUT = 30.0
_AFTER_KILL = 10.0  # how long a killed command's shell may take to report its end
_KILLED = 128 + 9  # a command SIGKILLed: by the kernel's OOM killer, or the disk watch
WARM_PREFIX = "sy-warm-"  # a warm build container's name: made ahead, for no build yet


class ContainerShellError(StackyardError):
    """The build container's shell cannot run commands (the container stopped, or its
    agent broke off)."""


@dataclass(frozen=True)
class ContainerSettings:
    """One build container: its image, what it mounts, its limits, and whose it is."""

    source: Path | None  # the checkout (or a local directory) at SOURCE_MOUNT; None: none
    image: str = DEFAULT_BUILD_IMAGE
    artifacts: Path | None = None  # mounted at ARTIFACTS_MOUNT
    limits: BuildLimits = field(default_factory=BuildLimits)
    network_mode: str = "host"
    run_id: str = "local"  # "<stack>:<build number>" or "<stack>:<stage>": a label
    platform_id: str = "local"  # the data dir's id: a label, to find leftovers
    docker: BuildScope | None = None  # the build's Docker API; None: no docker inside


class ContainerShell(CommandShell):
    """Commands in a fresh build container, through its shell agents."""

    name: ClassVar[str] = "build container"

    def __init__(
        self,
        settings: ContainerSettings,
        *,
        proxy: BuildProxy | None = None,
        engine: Callable[[], BuildContainer] = BuildContainer,
        later: Callable[[Callable[[], None]], None] | None = None,
        claimed: bool = True,
    ) -> None:
        self.settings = settings
        # A warm container (``claimed=False``) is made for no build yet: its directories
        # are empty, its Docker API refuses everything, until :meth:`claim`.
        self.claimed = claimed
        # Runs the container's removal: at once, or (the platform) after the result is
        # known, so that a build does not wait for the engine to remove its container.
        self._later = later or (lambda removal: removal())
        self._container = engine()
        self._proxy_socket: ProxySocket | None = None
        self._agents: dict[int | None, _Agent] = {}
        self._passwd: str | None = None
        self._default_shell: str | None = None
        self._watch: DiskWatch | None = None
        self._pids_hits = 0  # process-limit hits already said in the log
        self._closed = False
        try:
            self._start(proxy)
        except BaseException:
            self.close()
            raise

    # -- the seam ------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"in a build container of {self.settings.image} ({self._container.id[:12]})"

    @property
    def docker_socket(self) -> Path | None:
        """The build's Docker API on the host side (the platform's default build uses it)."""
        return self._proxy_socket.path if self._proxy_socket is not None else None

    def path_for(self, host_path: Path) -> str:
        resolved = host_path.resolve()
        for root, mount in self._mounts():
            if resolved.is_relative_to(root):
                return str(mount / resolved.relative_to(root))
        raise UsageError(f"{host_path} is not inside the build container's mounts")

    def shell_path(self, shell: str) -> str:
        return f"/bin/{shell}"

    def default_shell(self) -> str:
        """bash: the platform's build image has it; another image is asked once."""
        if self._default_shell is None:
            self._default_shell = "bash"
            if self.settings.image != DEFAULT_BUILD_IMAGE:
                with contextlib.suppress(StackyardError):
                    status, _ = self._container.exec_run(["/bin/sh", "-c", "test -x /bin/bash"])
                    self._default_shell = "bash" if status == 0 else "sh"
        return self._default_shell

    def tools_path(self) -> str:
        return TOOLS_MOUNT

    def account(self, name: str) -> Account:
        entry = _passwd_entries(self._read_passwd()).get(name)
        if entry is None:
            raise ConfigError(
                f"run-as: there is no Linux user named '{name}' in the build image "
                f"{self.settings.image}",
                hint="add the user to the build image (build.image in stackyard.yml), or "
                "change run-as in the build spec",
            )
        return entry

    def home(self) -> str:
        """The main agent's HOME: the engine set it from the image's user."""
        return self._agents[None].messages.reply.home or "/"

    def state_file(self, account: Account | None) -> str:
        return str(_agent_dir(account) / "state")

    def hear(self, notice: Callable[[str], None] | None) -> None:
        if self._proxy_socket is not None:
            self._proxy_socket.notice = notice

    def run(self, command: Command, on_output: OutputCallback) -> CommandOutcome:
        try:
            agent = self._agent(command.account)
        except StackyardError as exc:
            return CommandOutcome(status=125, start_error=f"could not start the command: {exc}")
        script = _entry(command) + command.script
        buildkit = self._buildkit_marks()
        outcome = agent.run(command, script, on_output, self._kill_group)
        stopped = None
        if outcome.status == _KILLED or outcome.start_error:
            stopped = self._stopped_reason()
        starved = kit_starved = None
        if outcome.status != 0:
            starved = self._starved_reason(agent, memory=bool(stopped and "memory" in stopped))
            kit_starved = self._buildkit_starved_reason(buildkit)
        found = [reason for reason in (stopped, starved, kit_starved) if reason]
        if found:
            said = [outcome.start_error] if outcome.start_error else []
            return replace(outcome, start_error="; ".join([*said, *found]))
        return outcome

    def stop_leftovers(self, groups: list[int]) -> list[int]:
        agents = list(self._agents.values())
        stopped: list[int] = []
        if not groups:
            return stopped
        for agent in agents:
            with contextlib.suppress(ContainerShellError, OSError):
                stopped += agent.stop(groups)
        return sorted(set(stopped))

    def claim(
        self, *, run_id: str, docker: BuildScope, source: Path, artifacts: Path | None
    ) -> None:
        """Give this warm container to one build: its empty directories move to ``source``
        and ``artifacts`` on this host (its mounts follow them), and its Docker API serves
        ``docker``'s stack from now on. OSError when a directory cannot move there (the
        caller then closes it and starts a fresh container)."""
        if self.claimed or self._closed:
            raise UsageError("this build container already serves a build")
        if self._agents[None].ended():
            raise ContainerShellError("the warm build container stopped")
        moves = [(self.settings.source, source), (self.settings.artifacts, artifacts)]
        for slot, target in moves:
            if slot is not None and target is not None:
                _move_directory(slot, target)
        self.settings = replace(
            self.settings, run_id=run_id, docker=docker, source=source, artifacts=artifacts
        )
        if self._proxy_socket is not None:
            self._proxy_socket.claim(docker)
        self.claimed = True
        self._watch_disk()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.stop()
        for agent in self._agents.values():
            agent.close()
        self._agents.clear()
        self._later(self._remove)

    def _remove(self) -> None:
        try:
            self._container.remove()
        finally:
            self._container.close()
            if self._proxy_socket is not None:
                self._proxy_socket.close()
                self._proxy_socket = None

    # -- making the container ------------------------------------------------------------------

    def _start(self, proxy: BuildProxy | None) -> None:
        settings = self.settings
        mounts = [Mount(settings.source, str(SOURCE_MOUNT))] if settings.source else []
        mounts.append(Mount(TOOLS_DIR, TOOLS_MOUNT, read_only=True))
        if settings.artifacts is not None:
            mounts.append(Mount(settings.artifacts, str(ARTIFACTS_MOUNT)))
        if settings.docker is not None:
            if proxy is None:
                raise UsageError("a build with a Docker API needs the build proxy")
            self._proxy_socket = proxy.open(settings.docker, claimed=self.claimed)
            mounts.append(Mount(self._proxy_socket.path, DOCKER_SOCKET))
        suffix = secrets.token_hex(4)
        stack = settings.run_id.partition(":")[0]
        name = f"sy-build-{stack}-{suffix}" if self.claimed else f"{WARM_PREFIX}{suffix}"
        spec = BuildContainerSpec(
            image=settings.image,
            name=name[:63],
            command=["/bin/sh", "-c", AGENT_SCRIPT, "stackyard-agent", str(_agent_dir(None))],
            mounts=mounts,
            network_mode=settings.network_mode,
            limits=settings.limits,
            labels={LABEL_BUILD: settings.run_id, LABEL_BUILD_PLATFORM: settings.platform_id},
            tmpfs={str(_AGENTS): "mode=1777,size=16m"},
        )
        self._container.create(spec)
        if self._proxy_socket is not None:
            self._proxy_socket.nest_builds_in(self._container.cgroup_parent())
        sock = self._container.attach()
        self._container.start()
        self._agents[None] = _Agent(sock, "the build container's shell")
        self._agents[None].greet()
        if self.claimed:
            self._watch_disk()

    def _watch_disk(self) -> None:
        settings = self.settings
        self._watch = DiskWatch(
            [p for p in (settings.source, settings.artifacts) if p is not None],
            settings.limits.disk,
            self._container.kill,
            more=self._container.upper_dir,
        )
        self._watch.start()

    def _mounts(self) -> list[tuple[Path, PurePosixPath]]:
        pairs = []
        if self.settings.source is not None:
            pairs.append((self.settings.source.resolve(), SOURCE_MOUNT))
        if self.settings.artifacts is not None:
            pairs.append((self.settings.artifacts.resolve(), ARTIFACTS_MOUNT))
        return pairs

    def _read_passwd(self) -> str:
        if self._passwd is None:
            self._passwd = self._container.read_file("/etc/passwd")
        return self._passwd

    def _agent(self, account: Account | None) -> _Agent:
        key = account.uid if account is not None else None
        agent = self._agents.get(key)
        if agent is None:
            if account is None:
                raise ContainerShellError("the build container's shell is gone")
            command = ["/bin/sh", "-c", AGENT_SCRIPT, "stackyard-agent", str(_agent_dir(account))]
            sock = self._container.exec_attach(command, account.name)
            agent = _Agent(sock, f"the build container's shell for {account.name}")
            self._agents[key] = agent
            agent.greet()
        return agent

    def _kill_group(self, group: int, signal: str) -> None:
        # dash's kill takes no "--": a negative number right after the signal is a group.
        script = f'kill -{signal} "-$0" 2>/dev/null || true'
        with contextlib.suppress(StackyardError):
            self._container.exec_run(["/bin/sh", "-c", script, str(group)])

    def _starved_reason(self, agent: _Agent, *, memory: bool) -> str | None:
        """When processes could not start for the build's process limit since the last
        time it was said: which limit, and what to change (said once per hit). Read from
        the container's pids cgroup; once the container is gone (the limit starved its
        shell, which ended it), from the kernel's log of the fork it refused there, or
        that shell's own "Cannot fork", when memory was not the cause."""
        hits = self._container.pids_limit_hits()
        if hits is not None:
            if hits <= self._pids_hits:
                return None
            self._pids_hits = hits
        elif memory or self._pids_hits or not self._said_no_fork(agent):
            return None
        else:
            self._pids_hits = 1
        return (
            f"the build reached its process limit ({self.settings.limits.pids} processes) and "
            "could not start more; start fewer at once (a runaway loop?), or raise "
            "build.pids_limit in stackyard.yml, up to the platform's (stackyard up --build-pids)"
        )

    def _buildkit_marks(self) -> tuple[int, int]:
        """The BuildKit builds this build's proxy passed on, and the BuildKit RUN steps
        the kernel refused a fork for, so far."""
        if self._proxy_socket is None:
            return 0, 0
        return self._proxy_socket.buildkit_builds, self._container.buildkit_forks_refused()

    def _buildkit_starved_reason(self, before: tuple[int, int]) -> str | None:
        """When the failed command ran a BuildKit build of its own and, meanwhile, the
        kernel refused a fork in a BuildKit RUN step's cgroup: the BuildKit budget (the
        build's process limit, shared by every BuildKit build on the engine) was reached.
        The step's cgroup has a random name, so the line is tied to the build by time and
        by the build's own BuildKit build, not by name."""
        kits, refusals = self._buildkit_marks()
        if kits <= before[0] or refusals <= before[1]:
            return None
        return (
            f"a BuildKit RUN step reached the process limit of BuildKit builds "
            f"({self.settings.limits.pids} processes, shared by every BuildKit build on the "
            "engine) and could not start more; start fewer at once, raise build.pids_limit "
            "in stackyard.yml (up to stackyard up --build-pids), or build with "
            "DOCKER_BUILDKIT=0"
        )

    def _said_no_fork(self, agent: _Agent) -> bool:
        """Whether a gone container could not start a process: the kernel's log, or its
        shell's last words."""
        return self._container.forks_refused() or agent.could_not_fork()

    def _stopped_reason(self) -> str | None:
        if self._watch is not None and self._watch.exceeded:
            return self._watch.exceeded
        try:
            end = self._container.end()
        except StackyardError:
            return None
        if end.oom_killed:
            limit = self.settings.limits.memory
            return (
                f"the build reached its memory limit ({size_text(limit)}) and a process was "
                "killed; use less, or raise build.memory in stackyard.yml, up to the "
                "platform's (stackyard up --build-memory)"
            )
        if not end.running:
            return f"the build container stopped (exit status {end.exit_code})"
        return None


def _entry(command: Command) -> str:
    """What a command's script starts with in the container: its environment (the agent
    runs it with none) and its working directory."""
    lines = [f"export {name}={_quote(value)}" for name, value in command.env.items()]
    cwd = _quote(command.cwd)
    lines.append(
        f"cd -- {cwd} 2>/dev/null || {{ echo 'could not start the command: no directory '{cwd}; "
        "exit 127; }"
    )
    return "\n".join(lines) + "\n"


def _move_directory(directory: Path, target: Path) -> None:
    """Rename ``directory`` to ``target`` (which may exist, empty): a bind mount of it
    follows, as it holds the inode, not the path."""
    if target.exists():
        target.rmdir()  # OSError unless empty
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(directory, target)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _agent_dir(account: Account | None) -> PurePosixPath:
    return _AGENTS / (f"u{account.uid}" if account is not None else "main")


def _passwd_entries(passwd: str) -> dict[str, Account]:
    entries = {}
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2].isdigit() and fields[3].isdigit():
            entries[fields[0]] = Account(fields[0], int(fields[2]), int(fields[3]), fields[5])
    return entries


def size_text(value: int) -> str:
    """A size in bytes as people read it: ``512 MiB``, ``1.5 GiB``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value} bytes"


class _Agent:
    """One shell agent in the container, over its attached stream."""

    def __init__(self, stream: Stream, what: str) -> None:
        self.stream = stream
        self.sock = stream.socket
        self.what = what
        self.frames = Frames()
        self.messages = Messages()
        self.carried = b""  # output after the last fence: background processes' late lines
        self.broken: str | None = None

    def greet(self) -> None:
        """Say hello and wait for ready: the agent writes nothing before it reads the
        hello, so no output can be lost while the engine's stream is being set up."""
        try:
            self.sock.sendall(b"hello\n")
        except OSError as exc:
            raise ContainerShellError(f"{self.what} did not start: {exc}") from exc
        deadline = time.monotonic() + _READY_TIMEOUT
        while not self.messages.reply.ready:
            if self.messages.reply.fatal:
                raise ContainerShellError(f"{self.what} failed: {self.messages.reply.fatal}")
            if time.monotonic() >= deadline or not self._receive(deadline, discard=True):
                raise ContainerShellError(
                    f"{self.what} did not start",
                    hint="the build image needs /bin/sh, env and setsid",
                )

    def run(
        self,
        command: Command,
        script: str,
        on_output: OutputCallback,
        kill: Callable[[int, str], None],
    ) -> CommandOutcome:
        if self.broken:
            return CommandOutcome(status=125, start_error=self.broken)
        token = new_token()
        fence = Fence(token, self.carried)
        reply = self.messages.next_reply()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            self.sock.sendall(run_request(token, command.shell, script))
        except OSError as exc:
            self.broken = f"{self.what} is gone: {exc}"
            return CommandOutcome(status=125, start_error=self.broken)
        timed_out = _Timeout(command.timeout, command.kill_grace)

        def output(data: bytes) -> None:
            text = decoder.decode(fence.feed(data))
            if text:
                on_output(text)

        while not (fence.reached and reply.status is not None):
            step = timed_out.step(reply.pid, kill)
            if step == "gave up":
                self.broken = f"{self.what} did not answer after its command was killed"
                break
            if not self._receive(time.monotonic() + 0.5, on_stdout=output) and self.broken:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            on_output(tail)
        self.carried = fence.after
        return _outcome(reply, timed_out.fired, self.broken)

    def stop(self, groups: list[int]) -> list[int]:
        if self.broken:
            return []
        reply = self.messages.next_reply()
        self.sock.sendall(stop_request(groups))
        deadline = time.monotonic() + 10
        while not reply.stopped_all and time.monotonic() < deadline:
            if not self._receive(deadline, discard=True):
                break
        return list(reply.stopped)

    def could_not_fork(self) -> bool:
        """Whether the agent's shell said it could not start a process."""
        return self.messages.could_not_fork()

    def ended(self) -> bool:
        """Whether the stream has ended (an idle agent writes nothing: EOF is all there is
        to read)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return self.broken is not None
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.stream.close()

    def _receive(
        self,
        until: float,
        *,
        on_stdout: Callable[[bytes], None] | None = None,
        discard: bool = False,
    ) -> bool:
        """Read what arrives before ``until``; False when the stream ended."""
        wait = max(0.0, until - time.monotonic())
        readable, _, _ = select.select([self.sock], [], [], wait)
        if not readable:
            return True
        try:
            data = self.sock.recv(65536)
        except OSError as exc:
            data = b""
            self.broken = f"{self.what} broke off: {exc}"
        if not data:
            self.broken = self.broken or f"{self.what} ended: the build container stopped"
            return False
        for stream, payload in self.frames.feed(data):
            if stream == STDERR:
                self.messages.feed(payload)
            elif stream == STDOUT and on_stdout is not None:
                on_stdout(payload)
            elif stream == STDOUT and not discard:
                self.carried += payload
        return True


class _Timeout:
    """The command's deadline: SIGTERM to its group, SIGKILL after the grace, then give up."""

    def __init__(self, timeout: float, grace: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.grace = grace
        self.fired = False
        self._killed_at: float | None = None
        self._terminated_at: float | None = None

    def step(self, group: int | None, kill: Callable[[int, str], None]) -> str:
        now = time.monotonic()
        if now < self.deadline or group is None:
            return "running"
        if self._terminated_at is None:
            self.fired = True
            self._terminated_at = now
            kill(group, "TERM")
            return "terminated"
        if self._killed_at is None and now - self._terminated_at >= self.grace:
            self._killed_at = now
            kill(group, "KILL")
            return "killed"
        if self._killed_at is not None and now - self._killed_at >= _AFTER_KILL:
            return "gave up"
        return "waiting"


def _outcome(reply: Reply, timed_out: bool, broken: str | None) -> CommandOutcome:
    exports = reply.exports.decode("utf-8", "replace") if reply.exports is not None else None
    if timed_out:
        return CommandOutcome(status=TIMED_OUT_STATUS, timed_out=True, group=reply.pid)
    if reply.status is None:
        return CommandOutcome(status=125, start_error=broken, group=reply.pid)
    return CommandOutcome(status=reply.status, group=reply.pid, state=reply.state, exports=exports)


class DiskWatch:
    """Stops a build that writes more than its disk limit.

    Docker on ext4 cannot bound a container's writes, so the watch samples: each second
    it reads how much the filesystems of ``paths`` gained since the build started (one
    ``statvfs`` each, nothing walked). Only when that exceeds the limit does it measure
    the build's own paths, and if they hold more than the limit it calls ``stop``. A build
    that writes faster than the disk fills in a second can overshoot by that second.
    """

    INTERVAL = 1.0

    def __init__(
        self,
        paths: list[Path],
        limit: int,
        stop: Callable[[], None],
        *,
        more: Callable[[], Path | None] | None = None,
    ) -> None:
        self.paths = paths
        self.limit = limit
        self._stop_build = stop
        self._more = more  # one more path, looked up on the watch's thread (an engine call)
        self.exceeded: str | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="disk-watch", daemon=True)
        self._baseline = self._used()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        if self._more is not None:
            with contextlib.suppress(StackyardError):
                extra = self._more()
                if extra is not None:
                    self.paths.append(extra)
                    self._baseline = {**self._used(), **self._baseline}
        while not self._halt.wait(self.INTERVAL):
            if self.check():
                return

    def check(self) -> bool:
        """One sample; True once the build was stopped."""
        used = self._used()
        grown = sum(max(0, size - self._baseline.get(dev, size)) for dev, size in used.items())
        if grown <= self.limit:
            return False
        written = sum(_disk_usage(path) for path in self.paths)
        if written <= self.limit:
            return False
        self.exceeded = (
            f"the build wrote {size_text(written)} to disk, over its limit of "
            f"{size_text(self.limit)}, and was stopped"
        )
        with contextlib.suppress(StackyardError):
            self._stop_build()
        return True

    def _used(self) -> dict[int, int]:
        """Bytes in use on each filesystem that holds one of the paths."""
        seen: dict[int, int] = {}
        for path in self.paths:
            try:
                device = os.stat(path).st_dev
                stats = os.statvfs(path)
            except OSError:
                continue
            seen[device] = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        return seen


def _disk_usage(root: Path) -> int:
    """Bytes allocated under ``root`` (not following links); what a build wrote there."""
    total = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total
