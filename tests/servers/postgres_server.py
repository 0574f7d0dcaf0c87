"""A PostgreSQL cluster of a test's own (pgserver's binaries, in a folder of the test's), that
the test may stop and start again: never the machine's shared cluster."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


class PostgresServer:
    """pgserver's cluster in `data_dir` (Unix socket only, trust auth); `stop()` is a fast
    shutdown (open connections are cut, as when a server restarts), `start()` brings it back
    on the same socket."""

    def __init__(self, data_dir: Path):
        import pgserver
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.server = pgserver.get_server(str(data_dir), cleanup_mode=None)
        self.url = self.server.get_uri()

    def stop(self) -> None:
        from pgserver import _commands
        _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata,
                         user=self.server.system_user, timeout=30)

    def start(self) -> None:
        self.server.ensure_postgres_running()
        self.url = self.server.get_uri()

    def remove(self) -> None:
        """Stop the cluster (if it runs) and delete its folder."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
