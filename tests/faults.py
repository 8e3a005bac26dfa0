"""Throwaway servers for the fault suite: a PostgreSQL cluster (initdb in a temporary
directory), a Redis server and dmrelay's own processes (migrate, sandbox, API, workers), each
on a free local port, so that faults can be injected without touching the machine's shared
servers.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app import embedded
from app.embedded import tail

REPO = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path | None:
    """The directory of initdb and pg_ctl: the machine's, else the embedded extra's."""
    return embedded.postgres_bindir(bundled_first=False)


def redis_server() -> str | None:
    return embedded.redis_server(bundled_first=False)


def missing_prerequisites() -> str | None:
    """Why the fault suite cannot run here, or None."""
    if postgres_bindir() is None:
        return f"PostgreSQL's initdb/pg_ctl are not installed ({embedded.INSTALL_HINT})"
    if redis_server() is None:
        return f"redis-server is not installed ({embedded.INSTALL_HINT})"
    try:
        embedded.server_user()  # as root, the user PostgreSQL runs as
    except embedded.Unavailable as reason:
        return str(reason)
    return None


class Postgres(embedded.Postgres):
    """A PostgreSQL cluster of our own, in `root`, on 127.0.0.1 and a free port; no fsync,
    for speed (it is thrown away)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, port=free_port(), durable=False, bundled_first=False)


class Redis:
    """A redis-server of our own: no persistence, so a restart loses everything.

    With `password`, clients must AUTH (as the default user, or as `user` when given, an
    ACL user with the same password). With `tls` (a cert file, its key and the CA that signed
    it), it also listens on `tls_port`."""

    def __init__(
        self,
        root: Path,
        *,
        password: str | None = None,
        user: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.password = password
        self.user = user
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = root / "redis.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            redis_server() or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.root),
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password]
            if self.user is not None:
                command += ["--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"]
        if self.tls is not None:
            cert, key, ca = self.tls
            command += [
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        ready = "-NOAUTH" if self.password is not None else "+PONG"
        while not (self.command("PING") or "").startswith(ready):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{tail(self.log)}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def command(self, *words: str) -> str | None:
        """One inline command; its first reply line, or None if Redis is not answering."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(" ".join(words).encode() + b"\r\n")
                return s.recv(1024).split(b"\r\n", 1)[0].decode()
        except OSError:
            return None


class Processes:
    """dmrelay's commands as subprocesses, each in its own process group, logging to root."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.running: list[tuple[str, subprocess.Popen]] = []
        self._counts: dict[str, int] = {}

    def log_of(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start(self, kind: str, *args: str) -> tuple[str, subprocess.Popen]:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        name = f"{kind}{self._counts[kind]}"
        with open(self.log_of(name), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", kind, *args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((name, process))
        return name, process

    def run(self, *args: str) -> dict:
        """A short command with --json; its output."""
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"dmrelay {' '.join(args)} failed:\n{result.stderr}")
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1]) if "--json" in args else {"output": result.stdout}

    def wait_http(self, url: str, name: str) -> None:
        process = dict(self.running)[name]
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{tail(self.log_of(name))}")
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url}:\n{tail(self.log_of(name))}")
            time.sleep(0.1)

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL a process group: no graceful shutdown, as in a crash."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def kill_all(self) -> None:
        for _, process in self.running:
            self.kill(process)

    def logs(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {name} (exit {process.poll()}) ---\n{tail(self.log_of(name), lines)}"
            for name, process in self.running
        )
