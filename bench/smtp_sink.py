"""A real aiosmtpd server on loopback that accepts everything and prints one line per accepted
message: `<time.time()> <X-Escalation-Handoff or 0> <first recipient>`. Started by the benches
in a process of its own: `python bench/smtp_sink.py PORT`; prints `ready PORT` first."""
from __future__ import annotations

import re
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller

HANDOFF_HEADER = re.compile(rb"^X-Escalation-Handoff:\s*(\d+)", re.MULTILINE | re.IGNORECASE)


class CountingHandler:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        content = envelope.original_content or envelope.content or b""
        match = HANDOFF_HEADER.search(content[:8192])
        at = time.time()
        sys.stdout.write(f"{at:.6f} {int(match[1]) if match else 0} "
                         f"{envelope.rcpt_tos[0] if envelope.rcpt_tos else '-'}\n")
        sys.stdout.flush()
        return "250 Message accepted"


def main() -> None:
    port = int(sys.argv[1])
    controller = Controller(CountingHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready {port}", flush=True)
    stop.wait(24 * 3600)
    controller.stop()


if __name__ == "__main__":
    main()
