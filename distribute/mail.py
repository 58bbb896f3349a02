"""Outgoing mail: SMTP from the settings, or, with no SMTP server set (development), an outbox folder.

`send_mail` builds a plain-text message and either delivers it with `smtplib` (in a worker thread:
SMTP is blocking and may be slow) or writes it as an `.eml` file into `mail_outbox` and logs it, so
that a password reset works out of the box on a developer's machine. The log names the file, never the
mail's text (it may hold a reset link).
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import trio

from .errors import DistributeError
from .settings import Settings

__all__ = ["MailError", "build_message", "send_mail"]

log = logging.getLogger(__name__)
SMTP_TIMEOUT = 20.0  # seconds: a mail server that hangs must not hold a request forever


class MailError(DistributeError):
    """The mail could not be handed to the SMTP server."""


def build_message(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> None:
    message = build_message(settings, to, subject, body)
    if settings.smtp_host:
        await trio.to_thread.run_sync(_deliver, settings, message)
        log.info("mail to %s sent through %s: %s", to, settings.smtp_host, subject)
    else:
        path = await trio.to_thread.run_sync(_to_outbox, Path(settings.mail_outbox), message)
        # Only where it went: a mail may hold a secret (a reset link), and logs travel further than files.
        log.info("no smtp_host set: mail to %s written to %s: %s", to, path, subject)


def _deliver(settings: Settings, message: EmailMessage) -> None:
    try:
        if settings.smtp_security == "tls":
            context = ssl.create_default_context()
            with smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT, context=context
            ) as smtp:
                _login_and_send(smtp, settings, message)
        else:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
                if settings.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                _login_and_send(smtp, settings, message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"could not send mail through {settings.smtp_host}:{settings.smtp_port}: {exc}") from exc


def _login_and_send(smtp: smtplib.SMTP, settings: Settings, message: EmailMessage) -> None:
    if settings.smtp_user:
        smtp.login(settings.smtp_user, settings.smtp_password)
    smtp.send_message(message)


def _to_outbox(folder: Path, message: EmailMessage) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time_ns()  # names sort in the order the mails were written, also within a second
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now // 10**9))
    path = folder / f"{stamp}.{now % 10**9:09d}-{secrets.token_hex(4)}.eml"
    # Written under another name, then renamed: whoever reads *.eml never sees a half-written mail.
    partial = path.with_suffix(".part")
    partial.write_bytes(bytes(message))
    partial.replace(path)
    return path
