"""A real SMTP server (aiosmtpd) on loopback that records messages and can refuse or stall."""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller

from devtools.embedded import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    at: float = field(default_factory=time.time)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",)) if hasattr(self.message, "get_body") else None
        if part is None:
            for sub in self.message.walk():
                if sub.get_content_type() == "text/plain":
                    return sub.get_payload(decode=True).decode()
            return self.message.get_payload()
        return part.get_content()


class RecordingHandler:
    def __init__(self):
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.refuse_next = 0            # answer 451 to the next N RCPT commands
        self.refuse_next_only = ""      # ... that name an address containing this
        self.refuse_code = "451 4.3.0 Try again later"
        self.stall_rcpt_seconds = 0.0   # hold each RCPT this long before answering
        self.rcpt_calls = 0
        self.refuse_addresses: set[str] = set()  # answer 550 for these, always
        self.refusing: str | None = None  # while set, answer it (a 4xx) to every RCPT
        self.refused: list[str] = []      # the addresses `refusing` turned away

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        self.rcpt_calls += 1
        if self.stall_rcpt_seconds:
            await asyncio.sleep(self.stall_rcpt_seconds)
        if address.lower() in self.refuse_addresses:
            return "550 5.1.1 Mailbox unavailable"
        if self.refusing:
            with self.lock:
                self.refused.append(address.lower())
            return self.refusing
        if self.refuse_next > 0 and self.refuse_next_only in address.lower():
            self.refuse_next -= 1
            return self.refuse_code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        from email import policy
        message = message_from_bytes(envelope.original_content or envelope.content,
                                     policy=policy.default)
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted"


class SmtpServer:
    """Start/stop an aiosmtpd server in a thread; `.messages` lists what it accepted."""

    def __init__(self):
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def about(self, handoff_id: int) -> list[Received]:
        """The messages about one escalation: a late send left over from an earlier test,
        arriving after `reset`, is not counted."""
        return [m for m in self.messages
                if m.message["X-Escalation-Handoff"] == str(handoff_id)]

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address.lower() in [r.lower() for r in m.rcpt_tos]]

    def reset(self) -> None:
        with self.handler.lock:
            self.handler.messages.clear()
        self.handler.refuse_next = 0
        self.handler.refuse_next_only = ""
        self.handler.stall_rcpt_seconds = 0.0
        self.handler.rcpt_calls = 0
        self.handler.refuse_addresses = set()
        self.handler.refusing = None
        with self.handler.lock:
            self.handler.refused.clear()
