"""Decide a run's environment: variable precedence and the platform variables.

Pure functions that the runner calls; no process is started here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from stackyard.config.buildspec import BuildSpec
from stackyard.errors import ConfigError

MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def secret_variables(spec: BuildSpec, secrets: Mapping[str, str]) -> dict[str, str]:
    """Environment variables whose values come from secrets; error on a secret not given."""
    values = {}
    for variable, secret in spec.env.secret_references().items():
        if secret not in secrets:
            raise ConfigError(
                f"env variable {variable} refers to secret '{secret}', which was not given",
                hint=f"give it to the run (CLI: --secret {secret}=VALUE)",
            )
        values[variable] = secrets[secret]
    return values


def declared_variables(
    spec: BuildSpec,
    *,
    secrets: Mapping[str, str],
    variables: Mapping[str, str],
    overrides: Mapping[str, str],
) -> dict[str, str]:
    """Variables the run declares, lowest precedence first: buildspec, secrets, stage, run."""
    return {
        **spec.env.variables,
        **secret_variables(spec, secrets),
        **variables,
        **overrides,
    }


def platform_variables(
    given: Mapping[str, str],
    *,
    workdir: str,
    artifacts_dir: str | None,
    succeeding: bool,
) -> dict[str, str]:
    """Variables the build cannot override; the runner resets them after every command."""
    values = dict(given)
    values.setdefault("CODEBUILD_START_TIME", str(int(time.time() * 1000)))
    if artifacts_dir is not None:
        values["ARTIFACTS_DIR"] = artifacts_dir
    values["CODEBUILD_SRC_DIR"] = workdir
    values["CODEBUILD_BUILD_SUCCEEDING"] = "1" if succeeding else "0"
    return values


def initial_environment(
    declared: Mapping[str, str], platform: Mapping[str, str], *, home: str, tools: str
) -> dict[str, str]:
    """The exported variables of the first command: a minimal PATH with ``tools`` (the
    ``aws`` stand-in) first, and HOME, then the rest."""
    return {"PATH": f"{tools}:{MINIMAL_PATH}", "HOME": home, **declared, **platform}
