"""Shell state that carries between build spec commands: working directory and variables.

The runner wraps each command in a script from :func:`command_script`; on exit the script
dumps its state with shell builtins only, and :func:`parse_state` reads it back from what
the command shell (shell.py) returns.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace

# Variables the shell itself manages: never carried to the next command.
SHELL_OWNED = frozenset(
    {
        "PPID", "OPTIND", "OPTARG", "OPTERR", "PS1", "PS2", "PS4", "IFS", "PWD", "OLDPWD",
        "LINENO", "SHLVL", "_", "UID", "EUID", "GROUPS", "HOSTNAME", "HOSTTYPE", "MACHTYPE",
        "OSTYPE", "RANDOM", "SRANDOM", "SECONDS", "EPOCHREALTIME", "EPOCHSECONDS", "SHELLOPTS",
        "DIRSTACK", "FUNCNAME", "PIPESTATUS", "COMP_WORDBREAKS", "HISTCMD", "HISTFILE",
        "HISTFILESIZE", "HISTSIZE", "COLUMNS", "LINES", "MAILCHECK",
    }
)  # fmt: skip
_OWNED_PREFIXES = ("BASH", "__sy_")
# bash sets these as plain variables when they are not in its environment.
_PLAIN_DEFAULTS = frozenset({"SHELL", "TERM"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Runs on EXIT: status, directory, then every variable as NUL-separated name/value pairs.
# Builtins only (set, read, case, eval, printf, export), so no process is forked.
_SAVE_FUNCTION = (
    '__sy_save() { __sy_rc=$?; set +eu; set > "$__sy_f.s"; '
    '{ printf \'%s\\0%s\\0\' "$__sy_rc" "$PWD"; '
    "while IFS= read -r __sy_l; do "
    "case $__sy_l in [A-Za-z_]*=*) ;; *) continue;; esac; "
    "__sy_n=${__sy_l%%=*}; "
    "case $__sy_n in *[!A-Za-z0-9_]*|__sy_*) continue;; esac; "
    'case $__sy_l in "$__sy_n=("*) continue;; esac; '
    'eval "[ -n \\"\\${$__sy_n+x}\\" ] && printf \'%s\\0%s\\0\' \\"\\$__sy_n\\" '
    '\\"\\${$__sy_n}\\""; '
    'done < "$__sy_f.s"; } > "$__sy_f"; export -p > "$__sy_f.x"; }'
)


@dataclass(frozen=True)
class ShellState:
    """What one command leaves for the next: directory, exported and plain variables."""

    cwd: str
    exported: dict[str, str] = field(default_factory=dict)
    plain: dict[str, str] = field(default_factory=dict)

    def with_exported(self, values: dict[str, str]) -> ShellState:
        """This state with ``values`` exported, replacing any plain variable of that name."""
        plain = {k: v for k, v in self.plain.items() if k not in values}
        return replace(self, exported={**self.exported, **values}, plain=plain)

    def value(self, name: str) -> str | None:
        return self.exported.get(name, self.plain.get(name))


def command_script(command: str, state: ShellState, state_file: str) -> str:
    """The script ``sh -c`` runs: restore plain variables, install the EXIT dump, run."""
    assignments = " ".join(f"{name}={shlex.quote(value)};" for name, value in state.plain.items())
    prefix = f"__sy_f={shlex.quote(state_file)}; {_SAVE_FUNCTION}; trap __sy_save EXIT;"
    return f"{prefix} {assignments}\n{command}"


def is_shell_owned(name: str) -> bool:
    return name in SHELL_OWNED or name.startswith(_OWNED_PREFIXES)


def parse_state(
    raw: bytes | None, exports: str | None, before: ShellState
) -> tuple[int, ShellState] | None:
    """The exit status and state a command dumped (``raw``, and ``export -p``'s listing),
    or None when it left no dump."""
    if raw is None or exports is None:
        return None
    fields = raw.decode("utf-8", "replace").split("\0")
    if len(fields) < 3 or not fields[0].isdigit():
        return None
    status, cwd = int(fields[0]), fields[1] or before.cwd
    values = dict(zip(fields[2:-1:2], fields[3::2], strict=False))
    values = {k: v for k, v in values.items() if not is_shell_owned(k)}
    exported_names = exported_in(exports)
    exported = {k: v for k, v in values.items() if k in exported_names}
    plain = {
        k: v for k, v in values.items() if k not in exported_names and k not in _PLAIN_DEFAULTS
    }
    return status, ShellState(cwd=cwd, exported=exported, plain=plain)


def exported_in(export_listing: str) -> set[str]:
    """Names in the output of ``export -p`` (dash's ``export X=..`` or bash's ``declare -x``)."""
    try:
        words = shlex.split(export_listing)
    except ValueError:
        words = export_listing.split()
    names: set[str] = set()
    for previous, word in zip(["", *words], words, strict=False):
        if previous == "export" or (previous.startswith("-") and "x" in previous):
            name = word.split("=", 1)[0]
            if _NAME.fullmatch(name):
                names.add(name)
    return names
