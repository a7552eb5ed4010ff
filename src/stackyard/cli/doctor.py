"""``stackyard doctor``: check every component, say what is wrong and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import typer

from stackyard.cli.output import console, print_json
from stackyard.cli.shared import DataDir, Json, settings_for, settings_of_command_line
from stackyard.errors import StackyardError
from stackyard.settings import Settings

if TYPE_CHECKING:
    from stackyard.platform.doctor import RegistryFact, TargetFact

MARKS = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


def doctor(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Check the engine, registry, router, upstreams, disk, memory, the data directory's
    permissions, the database, orphan tasks, HTTPS certificates, the targets' engines and
    registries and the outside registries' credentials; exit 1 when a check fails."""
    from stackyard.platform.diskuse import human_bytes
    from stackyard.platform.doctor import diagnose, failed
    from stackyard.platform.inspection import observe

    settings = _running_settings(settings_for(data_dir))
    facts = observe(settings)
    if facts.control_plane.answered:
        facts = replace(facts, targets=_targets(settings), registries=_registries(settings))
    findings = diagnose(facts)
    if json_output:
        print_json(
            {
                "ok": not failed(findings),
                "checks": [asdict(f) for f in findings],
                "disk_use": dict(facts.disk_use),
                "last_retention": facts.last_retention,
            }
        )
    else:
        width = max(len(f.check) for f in findings)
        for finding in findings:
            line = f"{MARKS[finding.verdict]} {finding.check.ljust(width)}  {finding.summary}"
            console.print(line, highlight=False, soft_wrap=True)
            if finding.fix:
                console.print(f"     {' ' * width}  fix: {finding.fix}", highlight=False,
                              soft_wrap=True)  # fmt: skip
        parts = ", ".join(f"{part} {human_bytes(size)}" for part, size in facts.disk_use.items())
        console.print(f"data directory {facts.data_dir}: {parts}", highlight=False)
        last = facts.last_retention
        if last:
            freed = sum(last.get("before", {}).values()) - sum(last.get("after", {}).values())
            console.print(
                f"last retention {last.get('finished_at', '?')}: freed {human_bytes(freed)} "
                f"(kept the last {last.get('keep_releases')} releases per stage)",
                highlight=False,
            )
        else:
            console.print("retention has not run yet (it runs daily; now: stackyard prune)")
    if failed(findings):
        raise typer.Exit(1)


def _targets(settings: Settings) -> tuple[TargetFact, ...] | None:
    """Each target but ``local`` as ``targets check`` finds it; None when not asked."""
    from stackyard.platform.doctor import TargetFact

    checks = _checks(settings, "targets")
    if checks is None:
        return None
    return tuple(
        TargetFact(c["target"], c["engine"], c["registry"], c.get("nodes")) for c in checks
    )


def _registries(settings: Settings) -> tuple[RegistryFact, ...] | None:
    """Each outside registry pinged with its stored credentials; None when not asked."""
    from stackyard.platform.doctor import RegistryFact

    checks = _checks(settings, "registries")
    if checks is None:
        return None
    return tuple(RegistryFact(c["registry"], c["problem"]) for c in checks)


def _checks(settings: Settings, kind: str) -> list[dict[str, Any]] | None:
    """``GET /api/v1/<kind>/<name>/check`` of each one listed (``local``, the built-in
    target, left out), through the running control plane: it holds their credentials.
    None when it cannot be asked."""
    from stackyard.cli.client import ApiClient

    try:
        client = ApiClient.discover(settings)
        listed = client.get(f"/api/v1/{kind}")[kind]
        return [
            client.get(f"/api/v1/{kind}/{one['name']}/check")
            for one in listed
            if one["name"] != "local"
        ]
    except StackyardError:
        return None


def _running_settings(base: Settings) -> Settings:
    """The settings the running control plane was started with (its engine, endpoint,
    domain options), so doctor asks what the platform asks; ``base`` when none runs or
    its command line cannot be read, with the ports it recorded (doctor reports the
    control plane itself)."""
    from stackyard.platform.inspection import effective_settings
    from stackyard.platform.upgrade import running_control_plane, settings_of

    try:
        return settings_of(base, running_control_plane(base), settings_of_command_line)
    except StackyardError:
        return effective_settings(base)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
