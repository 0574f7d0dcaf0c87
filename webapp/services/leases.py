"""One thread per process renews the leases every claim of the process holds.

A holder (deliveries.Heartbeat) has `due`, the monotonic time its next renewal is due, and
`renew()`, which renews once and says whether there is more to renew; the keeper calls it
when it is due and lets go of a holder that says no, or that raises."""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class LeaseKeeper:
    """The one thread of a process that renews the leases of every heartbeat held in it: a
    thread of its own per claim, started and then woken to stop for every row, cost the
    worker more than all the renewals. It sleeps until the earliest renewal is due; a new
    heartbeat wakes it only when it is due sooner than that."""

    IDLE_SECONDS = 5.0   # how long it sleeps when it holds nothing

    def __init__(self) -> None:
        self._held: set = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None

    def hold(self, heartbeat) -> None:
        with self._lock:
            self._held.add(heartbeat)
            if self._thread is None or not self._thread.is_alive():   # first, or forked
                self._wake_at = float("inf")
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="lease-keeper")
                self._thread.start()
            elif heartbeat.due < self._wake_at:
                self._wake.set()

    def release(self, heartbeat) -> None:
        with self._lock:
            self._held.discard(heartbeat)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [heartbeat for heartbeat in self._held if heartbeat.due <= now]
            for heartbeat in due:
                try:
                    more = heartbeat.renew()
                except Exception:   # never let one claim's bug stop every renewal
                    log.exception("lease renewal of delivery %s failed", heartbeat.delivery_id)
                    more = False
                if not more:
                    self.release(heartbeat)
            with self._lock:   # (a hold after this sees the new _wake_at, and wakes us)
                self._wake_at = min((heartbeat.due for heartbeat in self._held),
                                    default=time.monotonic() + self.IDLE_SECONDS)
                self._wake.clear()
            self._wake.wait(max(self._wake_at - time.monotonic(), 0.0))
