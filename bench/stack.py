"""Booting and stopping dmrelay's processes, and the bench's own database and queue."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from arq.connections import ArqRedis, RedisSettings, create_pool

from bench.cgroups import CpuQuota, wait_quiet

ROOT = Path(__file__).resolve().parents[1]
# Overridable so two runs (say, a developer's and a helper's) never share a database or queue.
DATABASE = os.environ.get("BENCH_DATABASE", "dmrelay_bench")
DATABASE_URL = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '14')}"
APP_SECRET = "bench-app-secret"
# Longer than a worker's graceful stop (it finishes the chats it is draining, up to 20 s), so
# it releases its delivery leases rather than leave them to expire under the next scenario.
STOP_SECONDS = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """dmrelay's API, worker and sandbox (plus the floor on demand), as child processes."""

    log_dir: Path
    # The dmrelay source tree the children run (default: this checkout).
    app_dir: Path = ROOT
    api_port: int = field(default_factory=free_port)
    sandbox_port: int = field(default_factory=free_port)
    floor_port: int = field(default_factory=free_port)
    # How many API processes (uvicorn workers) and dmrelay workers run (--api-workers, --workers).
    api_processes: int = 1
    workers: int = 1
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Each running worker's WORKER_HTTP_PORT, by process name.
    worker_ports: dict[str, int] = field(default_factory=dict)
    db: asyncpg.Connection | None = None
    queue: ArqRedis | None = None
    # While set (measure 10), each API process and worker started runs under a CPU quota of
    # its own (bench/cgroups.py); the sandbox, the floor and the load do not.
    quota: CpuQuota | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def floor_url(self) -> str:
        return f"http://127.0.0.1:{self.floor_port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The children run in app_dir, so `app` comes from there; bench (the floor) from here.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(
            DATABASE_URL=DATABASE_URL,
            REDIS_URL=REDIS_URL,
            META_GRAPH_URL=self.sandbox_url,
            META_APP_SECRET=APP_SECRET,
            META_VERIFY_TOKEN="bench-verify-token",
            SECRET_KEY="bench-secret-key",
            # Empty rather than unset, so a developer's .env cannot switch echoes on:
            # echo webhooks would add load the throughput runs do not mean to measure.
            SANDBOX_WEBHOOK_URL="",
            # Customer webhooks go to the bench's receiver, on loopback over http.
            WEBHOOK_ALLOW_HTTP="true",
            WEBHOOK_ALLOW_PRIVATE_HOSTS="true",
            # Files sent (the media scenario) go with the logs, not into the source tree.
            MEDIA_DIR=str(self.log_dir.parent / "media"),
        )
        return env

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """A fresh database and queue, migrated, with the sandbox and the API running."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        finally:
            await admin.close()
        self.cli("migrate")
        self.db = await asyncpg.connect(DATABASE_URL)
        self.queue = await create_pool(RedisSettings.from_dsn(REDIS_URL))
        await self.queue.flushdb()
        self.start("sandbox", "app.cli", "sandbox", "--port", str(self.sandbox_port))
        await self.wait_http(f"{self.sandbox_url}/_sandbox/faults", "sandbox")
        await self.start_api()

    async def close(self) -> None:
        self.stop_all()
        if self.queue is not None:
            await self.queue.aclose()
        if self.db is not None:
            await self.db.close()

    def start(
        self,
        name: str,
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        capped: bool = False,
    ) -> subprocess.Popen:
        """A child process; with `capped` and a quota set, in a CPU group of its own from its
        start (its children inherit it), capped once it has started up."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=self.app_dir,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches any children
        )
        log.close()
        self.processes[name] = process
        if capped and self.quota is not None:
            # Still importing: its children (uvicorn's) start in the group too.
            self.quota.place(name, process.pid)
        return process

    def stop_all(self) -> None:
        self.stop(*self.processes)

    def stop(self, *names: str) -> None:
        """Stop these processes: all told at once, then each waited for."""
        stopping = []
        for name in names:
            process = self.processes.pop(name, None)
            self.worker_ports.pop(name, None)
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                stopping.append(process)
        for process in stopping:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def pids(self, role: str) -> list[int]:
        """The root pids of a role: "api", "floor", … or "worker" (every worker process)."""
        return [
            process.pid
            for name, process in self.processes.items()
            if name == role or (role == "worker" and name in self.worker_ports)
        ]

    async def wait_http(self, url: str, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.log_dir / name}.log")
                try:
                    await client.get(url)
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} did not answer on {url} within {timeout:.0f}s")

    async def start_api(
        self,
        name: str = "api",
        port: int | None = None,
        env: dict[str, str] | None = None,
        processes: int | None = None,
    ) -> None:
        """The API (`dmrelay api --workers N`), by default the stack's own on api_port; others
        (the accept scenario's, with request logging off) on a port of their own."""
        port = self.api_port if port is None else port
        processes = self.api_processes if processes is None else processes
        process = self.start(
            name, "app.cli", "api", "--port", str(port), "--workers", str(processes), env=env,
            capped=True,
        )  # fmt: skip
        await self.wait_http(f"http://127.0.0.1:{port}/healthz", name)
        if self.quota is None:
            return
        if processes == 1:
            self.quota.cap(name)
            return
        # uvicorn's supervisor keeps its group; each child that serves gets one of its own,
        # capped once all have started (one answering is not all of them imported).
        served = await self.quota.place_children(name, process.pid, processes)
        await wait_quiet(list(served.values()))
        for group in served:
            self.quota.cap(group)

    async def start_floor(self) -> None:
        self.start(
            "floor",
            "uvicorn",
            "bench.floor:app",
            "--host", "127.0.0.1",
            "--port", str(self.floor_port),
            "--workers", "1",
            "--log-level", "info",  # as `dmrelay api` serves: access log included
        )  # fmt: skip
        await self.wait_http(f"{self.floor_url}/healthz", "floor")

    def start_worker(self, count: int | None = None) -> None:
        """`count` worker processes (default: the stack's), each with a health port."""
        for index in range(self.workers if count is None else count):
            name = "worker" if index == 0 else f"worker-{index + 1}"
            port = free_port()
            self.start(name, "app.cli", "worker", env={"WORKER_HTTP_PORT": str(port)}, capped=True)
            self.worker_ports[name] = port

    def stop_workers(self) -> None:
        self.stop(*[name for name in self.processes if name in self.worker_ports])

    async def wait_workers(self, timeout: float = 15.0) -> None:
        """Until every worker has polled its queue (its /healthz answers 200): started up.
        A worker that serves no health port (a source tree older than WORKER_HTTP_PORT, run
        with --app-dir) is waited for `timeout` seconds, then taken as started."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            for name, port in list(self.worker_ports.items()):
                while True:
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"{name} exited; see {self.log_dir / name}.log")
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/healthz")).is_success:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        print(f"[bench] {name}: no health port; its start-up counts in its CPU",
                              file=sys.stderr)  # fmt: skip
                        break
                    await asyncio.sleep(0.02)
        if self.quota is not None:
            # Started up uncapped (not measured); capped from now on.
            for name in self.worker_ports:
                self.quota.cap(name)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=self.app_dir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dmrelay {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def cli_json(self, *args: str) -> dict:
        return json.loads(self.cli(*args, "--json"))

    # --- state between scenarios -------------------------------------------------------

    async def reset_messages(self) -> None:
        """No messages, no queued jobs, nothing recorded by the sandbox: a level start."""
        await self.db.execute("TRUNCATE messages CASCADE")
        await self.queue.flushdb()
        async with httpx.AsyncClient(base_url=self.sandbox_url) as client:
            (await client.delete("/_sandbox/sent")).raise_for_status()
            (await client.post("/_sandbox/faults", json={})).raise_for_status()
