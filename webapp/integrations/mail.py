"""Email through flask-mail, with the SMTP timeout flask-mail does not set, over an SMTP
connection each worker thread keeps open between messages."""
from __future__ import annotations

import smtplib
import threading
import time

from flask import current_app
from flask_mail import Connection, Message

# A fan-out sends dozens of messages in a row from each worker thread: each one on a fresh
# connection pays a TCP handshake, EHLO and QUIT (a local server takes ~540 messages/s that
# way and ~1,300/s on a reused one). A thread keeps its connection while it is busy; after a
# pause it checks it with NOOP first (the server may have dropped it: nothing is lost, a new
# one is opened), and after a long pause or many messages it starts over.
REUSE_NOOP_AFTER_SECONDS = 1.0
REUSE_AT_MOST_SECONDS = 30.0
REUSE_AT_MOST_MESSAGES = 200


class TimeoutConnection(Connection):
    """flask-mail's Connection with a socket timeout, so a hung server never hangs a worker."""

    def configure_host(self) -> smtplib.SMTP:
        timeout = current_app.config["MAIL_TIMEOUT"]
        mail = self.mail
        cls = smtplib.SMTP_SSL if mail.use_ssl else smtplib.SMTP
        host = cls(mail.server, mail.port, timeout=timeout)
        host.set_debuglevel(int(mail.debug))
        if mail.use_tls:
            host.starttls()
        if mail.username and mail.password:
            host.login(mail.username, mail.password)
        return host


class MailRetryable(Exception):
    """The SMTP server is unreachable or said 'try again later' (4xx)."""


class MailPermanent(Exception):
    """The SMTP server refused the message for good (5xx)."""


class _Held:
    """A thread's open connection, with what it was opened for."""

    def __init__(self, connection: TimeoutConnection, settings: tuple):
        self.connection, self.settings = connection, settings
        self.used_at = time.monotonic()
        self.messages = 0


_held = threading.local()


def _settings(mail) -> tuple:
    return (mail.server, mail.port, mail.use_ssl, mail.use_tls, mail.username, mail.password,
            current_app.config["MAIL_TIMEOUT"])


def _drop(held: _Held | None, polite: bool) -> None:
    _held.value = None
    if held is None or held.connection.host is None:
        return
    try:
        if polite:
            held.connection.host.quit()
        else:
            held.connection.host.close()
    except (smtplib.SMTPException, OSError):
        held.connection.host.close()


def _connection(mail) -> TimeoutConnection:
    """This thread's open connection, checked or renewed as its age asks; else a new one."""
    held: _Held | None = getattr(_held, "value", None)
    settings = _settings(mail)
    if held is not None:
        idle = time.monotonic() - held.used_at
        if (held.settings != settings or idle > REUSE_AT_MOST_SECONDS
                or held.messages >= REUSE_AT_MOST_MESSAGES):
            _drop(held, polite=True)
        elif idle > REUSE_NOOP_AFTER_SECONDS:
            try:
                alive = held.connection.host.noop()[0] == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if alive:
                return held.connection
            _drop(held, polite=False)
        else:
            return held.connection
    connection = TimeoutConnection(mail)
    connection.host = connection.configure_host()
    _held.value = _Held(connection, settings)
    return connection


def _send(message: Message) -> None:
    mail = current_app.extensions["mail"]
    if mail.suppress:
        with TimeoutConnection(mail) as connection:
            connection.send(message)
        return
    connection = _connection(mail)
    try:
        connection.send(message)
    except BaseException:
        _drop(_held.value, polite=False)  # in an unknown state after a failure: never reused
        raise
    held = _held.value
    held.used_at, held.messages = time.monotonic(), held.messages + 1


def send(message: Message) -> None:
    """Send one message on this thread's SMTP connection (opened or renewed as needed); SMTP
    errors become retryable or permanent."""
    try:
        _send(message)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        reason = "; ".join(f"{code} {msg.decode(errors='replace')}"
                           for code, msg in error.recipients.values())
        raise (MailRetryable if all(400 <= c < 500 for c in codes) else MailPermanent)(
            f"SMTP refused recipient: {reason}") from error
    except smtplib.SMTPResponseException as error:
        text = error.smtp_error.decode(errors="replace") if isinstance(
            error.smtp_error, bytes) else str(error.smtp_error)
        kind = MailRetryable if 400 <= error.smtp_code < 500 else MailPermanent
        raise kind(f"SMTP {error.smtp_code} {text}") from error
    except (smtplib.SMTPException, OSError) as error:
        raise MailRetryable(f"SMTP unavailable: {error.__class__.__name__}: {error}") from error
