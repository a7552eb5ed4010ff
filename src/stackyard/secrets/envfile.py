"""Env files: render a stage's ``env_file`` template with its variables and secrets.

The deploy controller calls ``render_env_file`` at each task start; releases call it once
to refuse a template that cannot render. Templates come from the stack's repo, so they run
in Jinja2's sandbox, and a missing variable is an error, never an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from stackyard.errors import ConfigError

# Env files are not HTML: escaping would corrupt values such as a&b.
_ENVIRONMENT = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def render_env_file(template_path: str, template: str, values: Mapping[str, str]) -> str:
    """The rendered text; ConfigError naming the template (and variable) when it fails."""
    try:
        return _ENVIRONMENT.from_string(template).render(dict(values))
    except UndefinedError as exc:
        raise ConfigError(
            f"env file template {template_path}: {exc.message}: it is not a variable or "
            "secret of the stage",
            hint="set it (stackyard env set / stackyard secrets set), or change the template",
        ) from exc
    except TemplateSyntaxError as exc:
        raise ConfigError(
            f"env file template {template_path}, line {exc.lineno}: {exc.message}",
            hint="fix the template; it is Jinja2: {{ NAME }} inserts a variable or secret",
        ) from exc
    except TemplateError as exc:
        raise ConfigError(f"env file template {template_path}: {exc}") from exc
