"""`zsris-rt serve` in a subprocess for the tests that talk to a real server: started on a free
loopback port (`--port 0`, the demo pack, one ONNX Runtime thread), ready once it says where it
listens, stopped with SIGTERM as an operator would."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


class ServeProcess:
    def __init__(self, *args: str, token: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "ZSRIS_PACK"}  # the demo pack
        env["PYTHONUNBUFFERED"] = "1"
        self.token = token
        command = [sys.executable, "-m", "zsris_rt.commands", "serve", "--port", "0",
                   "--threads", "1", *args, *(["--token", token] if token else [])]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=ROOT)
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()
        line = self._first_line()
        found = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        if found is None:
            self.stop()
            raise AssertionError(f"no address in {line!r}; stderr: {self.log()}")
        self.url, self.port, self.pid = found.group(1), int(found.group(2)), self.proc.pid

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _first_line(self) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(START_TIMEOUT_S):
                self.stop()
                raise AssertionError(f"the server said nothing in {START_TIMEOUT_S:.0f} s")
        return self.proc.stdout.readline().decode()

    def log(self) -> str:
        return b"".join(self.stderr).decode(errors="replace")

    def rss(self) -> int:
        """VmRSS of the server process, bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert kib is not None
        return int(kib.group(1)) * 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def serving(*args: str, token: str | None = None) -> Iterator[ServeProcess]:
    server = ServeProcess(*args, token=token)
    try:
        yield server
    finally:
        server.stop()
