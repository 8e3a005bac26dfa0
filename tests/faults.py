"""Throwaway servers for the fault suite: a PostgreSQL cluster (initdb in a temporary
directory), a Redis server and dmrelay's own processes (migrate, sandbox, API, workers), each
on a free local port, so that faults can be injected without touching the machine's shared
servers.
"""

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def postgres_bindir() -> Path | None:
    """The directory of initdb and pg_ctl, or None if PostgreSQL's server is not installed."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    candidates += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    ]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


def missing_prerequisites() -> str | None:
    """Why the fault suite cannot run here, or None."""
    if postgres_bindir() is None:
        return "PostgreSQL's initdb/pg_ctl are not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: the cluster is run by the postgres OS user.
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` OS user to run PostgreSQL"
        if shutil.which("runuser") is None and shutil.which("su") is None:
            return "running as root and neither runuser nor su is available"
    return None


class Postgres:
    """A PostgreSQL cluster of our own, in `root`."""

    def __init__(self, root: Path) -> None:
        self.bindir = postgres_bindir()
        assert self.bindir is not None
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/dmrelay"

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() != 0:
            return command
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--", *command]
        return ["su", "postgres", "-s", "/bin/sh", "-c", subprocess.list2cmdline(command)]

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{tail(self.log)}"
            )

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "30",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


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
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
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
