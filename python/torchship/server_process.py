"""Run torchship-server as a child process: port 0 (the kernel picks a free one, read back from the
server's stdout), readiness polled on /v2/health/ready, SIGTERM to stop and drain.

Used by the demo, the benchmarks and the server tests: one way to start and stop a server.
"""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from torchship import _launcher

PORT_LINE = re.compile(r"listening on port (\d+)")
GRPC_PORT_LINE = re.compile(r"gRPC listening on port (\d+)")


def server_binary(search_path: bool = False) -> Path:
    """The torchship-server binary of the torchship package installed here (``torchship/bin/``, where a wheel
    and tools/bootstrap.sh put it); with ``search_path``, else the one on PATH (tests and benchmarks pin
    the package's)."""
    try:
        return _launcher.torchship_dir() / _launcher.BINARY
    except _launcher.LaunchError as e:
        found = shutil.which("torchship-server") if search_path else None
        if found is None:
            raise FileNotFoundError(f"{e}{' and none is on PATH' if search_path else ''}") from None
        return Path(found)


def server_env() -> dict[str, str]:
    """This environment plus torch's library directory, wherever torch is installed (see torchship._launcher)."""
    return _launcher.server_env()


class ServerError(RuntimeError):
    """The server did not come up, or did not stop cleanly; the message carries its log."""


class ServerProcess:
    """One torchship-server on 127.0.0.1. Its log (stderr) goes to ``log_path``."""

    def __init__(self, repository: str | Path, *args: str, log_path: str | Path, start_timeout_s: float = 120.0):
        self.cmd = [str(server_binary()), "--model-repository", str(repository), "--http-port", "0", *args]
        self.log_path = Path(log_path)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.grpc_port = 0  # when started with --grpc-port
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def start(self, wait_ready: bool = True) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=server_env())
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        wants_grpc = "--grpc-port" in self.cmd and self.cmd[self.cmd.index("--grpc-port") + 1] != "-1"
        while not self.port or (wants_grpc and not self.grpc_port):
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                self.kill()
                waited = self.start_timeout_s
                raise ServerError(f"no 'listening on port' line within {waited} s:\n{self.log()}") from None
            if line is None:
                raise ServerError(f"server exited before listening (code {self.proc.wait()}):\n{self.log()}")
            if m := GRPC_PORT_LINE.search(line):
                self.grpc_port = int(m.group(1))
            elif m := PORT_LINE.search(line):
                self.port = int(m.group(1))
        if wait_ready:
            self.wait_ready(deadline)
        return self

    def wait_ready(self, deadline: float | None = None) -> float:
        """Polls readiness; returns the seconds waited."""
        started = time.monotonic()
        deadline = deadline if deadline is not None else started + self.start_timeout_s
        assert self.proc is not None
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while True:
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerError(f"not ready within {self.start_timeout_s} s:\n{self.log()}")
                try:  # paces the poll and notices a server that died while loading
                    code = self.proc.wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    continue
                raise ServerError(f"server exited while loading (code {code}):\n{self.log()}")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain in-flight requests, then exit); returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"server did not exit within {timeout_s} s of SIGTERM:\n{self.log()}") from None
        self._close()
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        """Closes the stdout pipe once the reader has seen its end (an open pipe is a ResourceWarning)."""
        assert self.proc is not None
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.kill()
