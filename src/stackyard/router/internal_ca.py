"""Certificates of ``tls: internal`` names, minted by the control plane from Caddy's local CA.

Caddy 2.6 picks a name's issuer by an automation policy's ``subjects``, so serving a name
from the local CA through Caddy's own ``internal`` issuer means a config change (a reload,
which drops idle keep-alive connections) each time such a name comes or goes. Instead, the
router writes each internal name's bundle (leaf, intermediate, key: PEM) into a directory
of Caddy's storage, signed with the local CA's intermediate that Caddy's ``pki`` app keeps
there, and Caddy's catch-all policy gets the certificate of a handshake from a loopback
helper server that serves these files (``tls.get_certificate.http``). The files are the
table: Caddy's config never changes when a name is added or removed.

Decide (``needs_renewal``, ``state_of``) and do (``mint``, ``remove``) are apart; nothing
here talks to Caddy. ``Bundles`` keeps the files to the responder's table of names, every
decision of which bundles exist made and done under one lock (``locked``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stackyard.errors import ComponentError, StackyardError
from stackyard.router.base import Certificate

log = logging.getLogger(__name__)

# Under Caddy's storage root (shared by every Caddy of the data plane): one
# ``<name>.pem`` per internal name, the directory 0700 and each file 0600.
BUNDLES = "stackyard-internal"
LOCAL_CA = Path("pki", "authorities", "local")
# Caddy's own internal issuer gives 12 hours; a leaf never outlives the intermediate.
LIFETIME = timedelta(hours=12)
# A bundle is minted again once this share of its lifetime has passed (Caddy's own rule
# for its certificates: renew with a third left).
RENEW_AFTER = 2 / 3
# Backdated a little, for clocks of clients slightly behind.
BACKDATE = timedelta(minutes=1)
# In the bundles' directory: the lock every router of the data plane takes to change it.
LOCK = ".lock"


def bundle_dir(storage: Path) -> Path:
    return storage / BUNDLES


def bundle_path(storage: Path, name: str) -> Path:
    """Where ``name``'s bundle is: its lowercase name, which the helper server's route
    admits only when it is a DNS name (no ``/``, no empty label)."""
    return bundle_dir(storage) / f"{name.lower()}.pem"


@dataclass(frozen=True)
class Signer:
    """The local CA's intermediate: what signs the leaves."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def local_signer(storage: Path) -> Signer:
    """Caddy's local CA intermediate from its storage (its ``pki`` app creates it when it
    starts, and rotates it before it expires)."""
    folder = storage / LOCAL_CA
    try:
        cert = x509.load_pem_x509_certificate((folder / "intermediate.crt").read_bytes())
        key = serialization.load_pem_private_key(
            (folder / "intermediate.key").read_bytes(), password=None
        )
    except (OSError, ValueError) as exc:
        raise ComponentError(
            f"cannot read Caddy's local CA at {folder}: {exc}",
            hint="Caddy creates it when its pki app starts (the first HTTPS name does that); "
            "check that Caddy runs (`stackyard status`) and read its log",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ComponentError(f"Caddy's local CA key at {folder} is not an ECDSA key")
    return Signer(cert, key)


def read_bundle(storage: Path, name: str) -> x509.Certificate | None:
    """The leaf of ``name``'s bundle, None when there is none or it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(bundle_path(storage, name).read_bytes())
    except (OSError, ValueError):
        return None


def needs_renewal(leaf: x509.Certificate | None, now: datetime) -> bool:
    """Whether a bundle must be minted (again): there is none, or ``RENEW_AFTER`` of its
    lifetime has passed."""
    if leaf is None:
        return True
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AFTER


def mint(storage: Path, name: str, signer: Signer, now: datetime | None = None) -> x509.Certificate:
    """Write ``name``'s bundle, a new key and a leaf signed by ``signer``: atomically (a
    handshake reads either the old file or the new one), the file 0600."""
    at = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(at + LIFETIME, signer.cert.not_valid_after_utc)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name.lower())]), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
            critical=False,
        )
        .sign(signer.key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    body = (
        leaf.public_bytes(pem)
        + signer.cert.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    _write_private(bundle_path(storage, name), body)
    return leaf


def _write_private(path: Path, body: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove(storage: Path, name: str) -> bool:
    """Delete ``name``'s bundle: the next handshake for it is refused. Whether it was there."""
    try:
        bundle_path(storage, name).unlink()
    except FileNotFoundError:
        return False
    return True


def bundled_names(storage: Path) -> set[str]:
    """The names that have a bundle now."""
    folder = bundle_dir(storage)
    if not folder.is_dir():
        return set()
    return {path.name.removesuffix(".pem") for path in folder.glob("*.pem")}


def state_of(name: str, leaf: x509.Certificate | None, now: datetime) -> Certificate:
    """``valid``/``expired`` with the leaf's issuer and expiry, ``pending`` with no bundle
    (the router mints it when the name is added; the certificate watch tries again)."""
    if leaf is None:
        return Certificate(name, "pending")
    expires = leaf.not_valid_after_utc
    names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = str(names[0].value) if names else leaf.issuer.rfc4514_string()
    return Certificate(
        name, "valid" if expires > now else "expired", issuer=issuer, expires=expires
    )


@contextmanager
def locked(storage: Path) -> Iterator[None]:
    """Hold the bundles' lock: an exclusive ``flock`` on ``<bundles>/.lock``, which every
    router of the data plane takes (threads of one control plane each open the file, so
    they exclude each other as separate processes do). Creates the directory (0700) and
    Caddy's storage root (0700) when they are not there yet."""
    storage.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = bundle_dir(storage)
    folder.mkdir(mode=0o700, exist_ok=True)
    descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


class Bundles:
    """The bundles of one storage, kept to the names the responder has as ``tls:
    internal`` (``internal_names``, asked each time). A name is minted before the responder
    serves it (``adding``), and a bundle is deleted only when its name is no internal name
    (``prune``); both, and ``renew``, decide and do under ``locked``. So two stages'
    changes at the same moment cannot delete each other's new bundle, and a renewal cannot
    bring back the bundle of a name just removed."""

    def __init__(self, storage: Path, internal_names: Callable[[], Iterable[str]]) -> None:
        self.storage = storage
        self.internal_names = internal_names

    @contextmanager
    def adding(self, names: Iterable[str], *, quiet: bool = False) -> Iterator[list[str]]:
        """Mint the bundles of ``names`` that have none or are due (the names minted), and
        hold the lock while the caller makes them internal names in the responder's table:
        a prune waits until they are."""
        with locked(self.storage):
            yield self._mint_due(list(names), quiet=quiet)

    def renew(self, names: Iterable[str]) -> list[str]:
        """Mint the bundles of ``names`` that have none or are due, of those that are
        internal names now; the names minted."""
        with locked(self.storage):
            internal = {name.lower() for name in self.internal_names()}
            return self._mint_due([n for n in names if n.lower() in internal])

    def prune(self) -> list[str]:
        """Delete the bundles of names that are no internal name any more (the next
        handshake for one is refused: Caddy keeps no copy of what the helper served); the
        names deleted."""
        with locked(self.storage):
            internal = {name.lower() for name in self.internal_names()}
            gone = sorted(bundled_names(self.storage) - internal)
            for name in gone:
                remove(self.storage, name)
            return gone

    def _mint_due(self, names: list[str], *, quiet: bool = False) -> list[str]:
        """Under the lock: mint each of ``names`` that has no bundle or is due. A local CA
        that cannot be read is logged (quietly when the caller's plan may create it
        next), and the names stay pending for the certificate watch."""
        now = datetime.now(UTC)
        due = [n for n in names if needs_renewal(read_bundle(self.storage, n), now)]
        if not due:
            return []
        try:
            signer = local_signer(self.storage)
        except StackyardError as exc:
            (log.debug if quiet else log.warning)(
                "internal certificates of %s: %s", ", ".join(due), exc
            )
            return []
        for name in due:
            mint(self.storage, name, signer, now)
        return due
