"""Certificate state of a host name, read from what Caddy leaves on disk: the certificate
files in its storage (shared by every Caddy of the data plane) and its JSON log of
certificate attempts (``tls.obtain``, ``http.acme_client``). CaddyRouter.certificates
calls it; nothing here talks to Caddy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from stackyard.errors import ComponentError
from stackyard.router import internal_ca
from stackyard.router.base import Certificate, CertificateState

# An attempt a log shows as still going on for longer than this was cut short (its Caddy
# was killed); it no longer holds the state at ``pending``.
STALE_ATTEMPT = timedelta(minutes=5)
FAILED_HINT = (
    "check that DNS for {name} points at this machine and that ports 80 and 443 are "
    "reachable from the internet; Caddy tries again by itself (after a minute, then "
    "less often)"
)


def acme_log_path(admin_socket: Path) -> Path:
    """Where the Caddy behind ``admin_socket`` logs its certificate attempts."""
    return admin_socket.with_name(f"{admin_socket.stem}-acme.log")


def storage_root(config: Any) -> Path | None:
    """The file-system storage root of a Caddy config, None when it names none."""
    storage = config.get("storage") if isinstance(config, dict) else None
    if isinstance(storage, dict) and storage.get("module") == "file_system" and storage.get("root"):
        return Path(str(storage["root"]))
    return None


def _storage_key(name: str) -> str:
    """Caddy's storage folder of a name: lowercase (CertMagic folds it), ``*`` spelled out."""
    return name.lower().replace("*", "wildcard_")


def stored_certificates(storage: Path, name: str) -> Iterator[x509.Certificate]:
    """Every certificate Caddy stored for ``name``, from any issuer."""
    key = _storage_key(name)
    for path in sorted(storage.glob(f"certificates/*/{key}/{key}.crt")):
        try:
            yield x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ComponentError(
                f"cannot read the certificate of {name} at {path}: {exc}",
                hint="Caddy rewrites it on its next renewal; remove the file to have it "
                "obtained again",
            ) from exc


def _issuer(cert: x509.Certificate) -> str:
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.issuer.rfc4514_string()


@dataclass
class Attempts:
    """What one Caddy's log says about obtaining ``name``'s certificate, so far."""

    error: str = ""  # why the latest attempt failed, '' when it did not (yet)
    started: float | None = None  # when an attempt still going on began (unix time)
    obtaining: bool = False  # it holds the lock: not only waiting for another Caddy


def attempts(name: str, lines: Iterable[str]) -> Attempts:
    """Read one Caddy's log of certificate attempts for ``name``.

    A challenge's failure ("Failed to connect to … for the tls-alpn-01 challenge") says
    more than the issuer's summary, so it wins; a new attempt forgets the older errors.
    An attempt ends when the certificate is obtained, found in the shared storage (another
    Caddy obtained it), or fails.
    """
    found = Attempts()
    challenge, summary = "", ""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or str(entry.get("identifier")).lower() != name.lower():
            continue
        message = entry.get("msg")
        if message == "acquiring lock":
            challenge, summary = "", ""
            found.started, found.obtaining = float(entry.get("ts", 0.0)), False
        elif message == "lock acquired":
            found.obtaining = True
        elif message == "challenge failed":
            challenge = f"{entry.get('challenge_type', 'challenge')}: {entry.get('error', '')}"
        elif message == "could not get certificate from issuer" and not _cancelled(entry):
            summary = str(entry.get("error", ""))
            found.started, found.obtaining = None, False
        elif message in _DONE:
            challenge, summary = "", ""
            found.started, found.obtaining = None, False
    found.error = _said_of_staging(challenge or summary)
    return found


# Let's Encrypt's staging CA: after a failed attempt, Caddy (CertMagic) tries the next
# ones there first, to spare the production CA's rate limits, so the latest error can be
# the staging CA's. Said so, lest anyone think the platform is pointed at staging.
_LE_STAGING = "acme-staging-v02.api.letsencrypt.org"
_STAGING_NOTE = (
    " (from Let's Encrypt's staging CA: after a failed attempt Caddy tries there first, to "
    "spare the production CA's rate limits; once it succeeds there, it asks the CA the "
    "platform is set to)"
)


def _said_of_staging(error: str) -> str:
    return error + _STAGING_NOTE if _LE_STAGING in error else error


_DONE = frozenset({"certificate obtained successfully", "certificate already exists in storage"})


def _cancelled(entry: dict[str, Any]) -> bool:
    """A config change (a reload) cancels an attempt in flight; the new config tries again,
    so that is no failure of the name."""
    return "context canceled" in str(entry.get("error", ""))


def _log_lines(paths: Iterable[Path]) -> Iterator[str]:
    """The lines of each log, the rolled-over file (Caddy's ``name-<time>.log``) first."""
    for path in paths:
        for rolled in sorted(path.parent.glob(f"{path.stem}-*{path.suffix}")):
            yield from _read_lines(rolled)
        yield from _read_lines(path)


def _read_lines(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            yield from lines
    except FileNotFoundError:
        return


def certificate_of(
    name: str, storage: Path | None, logs: Iterable[Path], *, now: datetime | None = None
) -> Certificate:
    """A ``tls: internal`` name's bundle, when it has one (internal_ca.py); else
    ``valid`` with the expiry of the newest stored certificate, once no Caddy is still
    at it (the others pick it up from the shared storage within about a second); else
    ``failed`` with the last error of the logs, unless a Caddy is trying again right now
    (one waiting for the lock does not count: the one holding it retries later); else
    ``pending``."""
    at = now or datetime.now(UTC)
    leaf = internal_ca.read_bundle(storage, name) if storage else None
    if leaf is not None:  # a ``tls: internal`` name: minted by the router, no attempts
        return internal_ca.state_of(name, leaf, at)
    seen = [attempts(name, _log_lines([log])) for log in logs]
    recent = at.timestamp() - STALE_ATTEMPT.total_seconds()
    going = [a for a in seen if a.started is not None and a.started > recent]
    found = list(stored_certificates(storage, name)) if storage else []
    if found and not going:
        newest = max(found, key=lambda cert: cert.not_valid_after_utc)
        expires = newest.not_valid_after_utc
        state: CertificateState = "valid" if expires > at else "expired"
        return Certificate(name, state, issuer=_issuer(newest), expires=expires)
    error = next((a.error for a in seen if a.error), "")
    if error and not any(a.obtaining for a in going):
        return Certificate(name, "failed", error=error, hint=FAILED_HINT.format(name=name))
    return Certificate(name, "pending", error=error)
