"""Email through flask-mail, with the SMTP timeout flask-mail does not set."""
from __future__ import annotations

import smtplib

from flask import current_app
from flask_mail import Connection, Message


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


def send(message: Message) -> None:
    """Send one message on its own connection; SMTP errors become retryable or permanent."""
    try:
        with TimeoutConnection(current_app.extensions["mail"]) as connection:
            connection.send(message)
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
