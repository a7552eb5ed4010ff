"""Email through SMTP: the message as a plain-text mail to one address.

``compose`` is pure (tests read the mail it makes); ``EmailChannel`` sends it with
``smtplib``: STARTTLS (default, port 587), implicit TLS (port 465) or none (port 25; for a
relay on this machine), with the server's certificate checked against the system's CAs,
and a login when the channel has a user name. SMTP 4xx answers and lost connections are
retried; 5xx answers, a refused login and a certificate that does not verify are not.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import ClassVar

from stackyard.channels.base import (
    TIMEOUT,
    Channel,
    Destination,
    Message,
    SmtpServer,
    is_loopback,
)
from stackyard.errors import PermanentError, RetryableError, UsageError

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


def check_address(address: str, what: str) -> None:
    """One plain address: no display name, no line break (which would forge headers)."""
    name, parsed = parseaddr(address)
    if (
        not parsed
        or parsed != address.strip()
        or name
        or "@" not in parsed
        or any(c in address for c in "\r\n,;")
    ):
        raise UsageError(f"{what}: '{address}' is not one email address like ops@example.com")


def compose(message: Message, to: str, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = " ".join(f"[stackyard] {message.title}".split())
    mail["From"] = sender
    mail["To"] = to
    mail["Message-ID"] = make_msgid(domain="stackyard.invalid")
    if message.at is not None:
        mail["Date"] = format_datetime(message.at)
    mail["X-Stackyard-Event"] = message.event
    lines = [message.text, ""] if message.text else []
    width = max((len(name) for name, _ in message.fields), default=0)
    lines += [f"{name + ':':<{width + 1}} {value}" for name, value in message.fields]
    if message.link:
        lines += ["", message.link]
    lines += ["", "-- ", f"Stackyard notification: {message.event}, stack {message.stack}"]
    mail.set_content("\n".join(lines) + "\n")
    return mail


class EmailChannel(Channel):
    name: ClassVar[str] = "email"

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self._timeout = timeout

    def check(self, destination: Destination) -> None:
        check_address(destination.target, "--email")
        smtp = destination.smtp
        if smtp is None or not smtp.host:
            raise UsageError(
                "an email channel needs an SMTP server", hint="give --smtp HOST[:PORT]"
            )
        check_address(smtp.sender, "--from")
        if smtp.security == "none" and smtp.password and not is_loopback(smtp.host):
            raise UsageError(
                "--smtp-security none would send the SMTP password in the clear",
                hint="use starttls or tls, or a relay on this machine",
            )

    def deliver(self, message: Message, destination: Destination) -> str:
        smtp = destination.smtp
        if smtp is None:
            raise PermanentError("the email channel has no SMTP server")
        mail = compose(message, destination.target, smtp.sender)
        try:
            with self._connect(smtp) as server:
                if smtp.security == "starttls":
                    server.starttls(context=ssl.create_default_context())
                if smtp.username:
                    server.login(smtp.username, smtp.password)
                refused = server.send_message(mail)
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(
                f"the SMTP server {smtp.host}:{smtp.port} does not offer STARTTLS or AUTH",
                hint="use --smtp-security tls (port 465), or a server that offers STARTTLS",
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(
                f"the SMTP server {smtp.host}:{smtp.port} refused the login of "
                f"{smtp.username}: {exc.smtp_code}",
                hint="add the channel again with the right user and password",
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise _by_code(codes[-1] if codes else 550, f"refused {destination.target}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, _said(exc.smtp_error)) from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"the SMTP server {smtp.host}:{smtp.port} has a certificate that does not "
                f"verify: {exc.verify_message}"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timed out
            raise RetryableError(
                f"the SMTP server {smtp.host}:{smtp.port} could not take the mail: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if refused:
            raise PermanentError(f"the SMTP server refused {', '.join(refused)}")
        return f"SMTP accepted for {destination.target}"

    def _connect(self, smtp: SmtpServer) -> smtplib.SMTP:
        if smtp.security == "tls":
            return smtplib.SMTP_SSL(
                smtp.host,
                smtp.port,
                timeout=self._timeout,
                context=ssl.create_default_context(),
                local_hostname=_local_name(),
            )
        return smtplib.SMTP(
            smtp.host, smtp.port, timeout=self._timeout, local_hostname=_local_name()
        )


def _by_code(code: int, said: str) -> PermanentError | RetryableError:
    text = f"the SMTP server answered {code}: {said}"
    return RetryableError(text) if 400 <= code < 500 else PermanentError(text)


def _said(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())[:200]


def _local_name() -> str:
    """What EHLO says: the short host name (smtplib's default asks DNS for the FQDN)."""
    return socket.gethostname() or "localhost"
