"""Outside registries: the OCI registries (GHCR, Docker Hub, Harbor, ECR, a self-hosted
one) that stacks may push their images to, by name (``stackyard registries``).

Called by the API. A registry is only recorded once it accepted its credentials (basic,
or the bearer token flow); its password is sealed through the SecretStore seam, never
returned, and masked in every log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.errors import NotFoundError, PermanentError, StackyardError, UsageError
from stackyard.images.imagestore import Placement
from stackyard.images.reference import is_host, is_repository
from stackyard.images.registry import RegistryClient
from stackyard.images.registry_base import Registry
from stackyard.registry_login import RegistryLogin
from stackyard.secrets.store import SecretStore
from stackyard.store.models import OutsideRegistry, Stack, Target

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LOCAL = "local"  # the platform's own registry; not a name an outside one may take


class RegistryView(BaseModel):
    """An outside registry as the API shows it: never its password."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    url: str
    endpoint: str = ""
    namespace: str = ""
    username: str
    auth: str
    created_at: datetime
    created_by: str


class RegistryAdd(BaseModel):
    name: str
    url: str
    username: str
    password: str


class RegistryCheck(BaseModel):
    """How a registry answered its stored credentials: ``ok``, or the problem."""

    registry: str
    ok: bool
    problem: str = ""


class RegistryCredentials(BaseModel):
    """New credentials for a registry (a rotated password or token); ``username`` keeps
    the stored one when left out."""

    username: str | None = None
    password: str


@dataclass(frozen=True)
class RegistryAddress:
    """Where an outside registry is: ``scheme://endpoint`` and the namespace its stacks'
    repositories go under (``ghcr.io/acme`` → ``ghcr.io``, ``acme``)."""

    scheme: str | None  # None: http for loopback, https otherwise
    endpoint: str
    namespace: str

    def repository(self, stack: str) -> str:
        return f"{self.namespace}/{stack}" if self.namespace else stack


def parse_url(url: str) -> RegistryAddress:
    """``[http(s)://]host[:port][/namespace]``; anything else is refused, saying why."""
    text = url.strip()
    scheme = None
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("http", "https"):
            raise UsageError(f"registry URL {url}: scheme {scheme!r} is not http or https")
    endpoint, _, namespace = text.partition("/")
    namespace = namespace.strip("/")
    if not is_host(endpoint):
        raise UsageError(
            f"registry URL {url}: {endpoint!r} is not a host[:port]",
            hint="give host[:port][/namespace], e.g. ghcr.io/acme or 127.0.0.1:5001",
        )
    if namespace and not is_repository(namespace):
        raise UsageError(
            f"registry URL {url}: namespace {namespace!r} is not a repository path",
            hint="lower-case letters, digits, '.', '_' and '-', in parts joined by '/'",
        )
    return RegistryAddress(scheme, endpoint, namespace)


def _view(row: OutsideRegistry) -> RegistryView:
    view = RegistryView.model_validate(row)
    address = parse_url(row.url)
    view.endpoint, view.namespace = address.endpoint, address.namespace
    return view


class RegistryService:
    def __init__(self, sessions: sessionmaker[Session], secrets: SecretStore) -> None:
        self._sessions = sessions
        self._secrets = secrets

    def add(self, body: RegistryAdd, *, created_by: str) -> RegistryView:
        """Check the credentials against the registry, then record it; a registry that
        refuses them (or cannot be reached) is not recorded, and the error names it."""
        name = _valid_name(body.name)
        address = parse_url(body.url)
        if not body.username or not body.password:
            raise UsageError(
                f"registry {name}: give a username and a password (or token)",
                hint="stackyard registries add NAME --url URL --username U --password-stdin",
            )
        with self._sessions() as session:
            if _row(session, name) is not None:
                raise UsageError(
                    f"registry {name} exists",
                    hint=f"new credentials: stackyard registries update {name} "
                    "--password-stdin; another URL: add it under another name",
                )
        auth = self._check(name, address, body.username, body.password, adding=True)
        sealed = self._secrets.seal_platform(body.password)
        with self._sessions.begin() as session:
            row = OutsideRegistry(
                name=name,
                url=body.url.strip(),
                username=body.username,
                password_sealed=sealed,
                auth=auth,
                created_by=created_by,
            )
            session.add(row)
            session.flush()
            return _view(row)

    def update(self, name: str, body: RegistryCredentials) -> RegistryView:
        """Replace a registry's credentials (a password or token rotated at the registry),
        once the registry accepts the new ones; refused ones change nothing. The URL stays:
        the stacks and targets using the registry keep their images there."""
        with self._sessions() as session:
            row = _require(session, name)
            address, username = parse_url(row.url), body.username or row.username
        if not body.password:
            raise UsageError(
                f"registry {name}: the password is empty",
                hint=f"stackyard registries update {name} --password-stdin",
            )
        auth = self._check(name, address, username, body.password, adding=True)
        sealed = self._secrets.seal_platform(body.password)
        with self._sessions.begin() as session:
            row = _require(session, name)
            row.username, row.password_sealed, row.auth = username, sealed, auth
            session.flush()
            view = _view(row)
        self.login(name)  # masked in every log from now on, as at the platform's start
        return view

    def list(self) -> list[RegistryView]:
        with self._sessions() as session:
            rows = session.scalars(select(OutsideRegistry).order_by(OutsideRegistry.name))
            return [_view(row) for row in rows]

    def spaces(self) -> tuple[str, ...]:
        """Where the platform keeps images in outside registries: each one's
        ``host[:port][/namespace]`` (what a build may not read or write outside its own
        repository)."""
        with self._sessions() as session:
            urls = session.scalars(select(OutsideRegistry.url)).all()
        addresses = [parse_url(url) for url in urls]
        return tuple(
            f"{a.endpoint}/{a.namespace}" if a.namespace else a.endpoint for a in addresses
        )

    def get(self, name: str) -> RegistryView:
        with self._sessions() as session:
            return _view(_require(session, name))

    def remove(self, name: str) -> RegistryView:
        """Forget a registry and its credentials; refused while a stack pushes to it or a
        target pulls from it."""
        with self._sessions.begin() as session:
            row = _require(session, name)
            users: tuple[tuple[str, type[Stack | Target], str], ...] = (
                ("stack(s)", Stack, "delete those stacks, or keep the registry"),
                ("target(s)", Target, "remove those targets first: stackyard targets remove"),
            )
            for what, model, hint in users:
                names = session.scalars(
                    select(model.name).where(model.registry_name == name).order_by(model.name)
                ).all()
                if names:
                    raise UsageError(
                        f"registry {name} is used by {what} {', '.join(names)}", hint=hint
                    )
            view = _view(row)
            session.delete(row)
            return view

    def login(self, name: str) -> tuple[RegistryAddress, RegistryLogin]:
        """Where the registry is and its credentials, for the platform to push or pull."""
        with self._sessions() as session:
            row = _require(session, name)
            address = parse_url(row.url)
            password = self._secrets.open_platform(
                row.password_sealed, what=f"the password of registry {name}"
            )
            return address, RegistryLogin(address.endpoint, row.username, password)

    def placement(self, stack: str) -> Placement | None:
        """Where ``stack``'s images live: its outside registry, or None for the platform's
        own (also for a stack that does not exist: the caller's lookup names that)."""
        with self._sessions() as session:
            name = session.scalar(select(Stack.registry_name).where(Stack.name == stack))
        return None if name is None else self.placement_named(name)

    def placement_named(self, name: str) -> Placement:
        """Where images go in the outside registry ``name`` (a target's registry)."""
        address, login = self.login(name)
        return Placement(name, address.scheme, address.namespace, login)

    @staticmethod
    def connect(placement: Placement) -> Registry:
        """A registry client for an outside registry (ImageStore's ``connect``)."""
        return RegistryClient(
            placement.endpoint,
            username=placement.login.username,
            password=placement.login.password,
            scheme=placement.scheme,
            credentials_hint=f"if the password or token changed at the registry: stackyard "
            f"registries update {placement.registry} --password-stdin",
        )

    def check(self, name: str) -> RegistryCheck:
        """Reach the registry with its stored credentials (`registries check`, doctor)."""
        try:
            self.ping(name)
        except NotFoundError:
            raise
        except StackyardError as exc:
            return RegistryCheck(registry=name, ok=False, problem=exc.message)
        return RegistryCheck(registry=name, ok=True)

    def ping(self, name: str) -> None:
        """Reach the registry with its stored credentials; the error names it and says why."""
        address, login = self.login(name)
        self._check(name, address, login.username, login.password, adding=False)

    def mask_all(self) -> None:
        """Mask every outside registry's password in every log (at the platform's start)."""
        for view in self.list():
            self.login(view.name)

    @staticmethod
    def _check(
        name: str, address: RegistryAddress, username: str, password: str, *, adding: bool
    ) -> str:
        client = RegistryClient(
            address.endpoint,
            username=username,
            password=password,
            scheme=address.scheme,
            retries=2,
            timeout=15.0,
        )
        with client:
            try:
                client.ping()
            except StackyardError as exc:
                # Adding, the URL and credentials are the user's input: a refusal is
                # theirs to mend (400, exit 2), not the platform failing (500).
                refused = UsageError if adding else PermanentError
                outcome = "; nothing was recorded" if adding else ""
                raise refused(
                    f"registry {name} ({address.endpoint}): {exc.message}{outcome}",
                    hint=exc.hint or "check the URL, the username and the password",
                ) from exc
            return client.auth_scheme or "none"


def _valid_name(name: str) -> str:
    if not NAME.match(name) or name == LOCAL:
        raise UsageError(
            f"registry name '{name}' is not valid",
            hint="lower-case letters, digits and '-' (at most 63), not 'local' (the "
            "platform's own registry)",
        )
    return name


def _row(session: Session, name: str) -> OutsideRegistry | None:
    return session.scalar(select(OutsideRegistry).where(OutsideRegistry.name == name))


def _require(session: Session, name: str) -> OutsideRegistry:
    row = _row(session, name)
    if row is None:
        raise NotFoundError(
            f"no registry named '{name}'", hint="list them: stackyard registries list"
        )
    return row
