"""Run the `dmrelay` command on the test database: in-process (its main function, in a thread
of its own, as it runs its own event loop), or as a separate process as an operator does."""

import asyncio
import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cli import main

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


def _run_main(args: list[str], stdin: str, env: dict[str, str]) -> Done:
    out, err = io.StringIO(), io.StringIO()
    saved_stdin, saved_env = sys.stdin, dict(os.environ)
    sys.stdin = io.StringIO(stdin)
    os.environ.update(env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(args)
                code = 0
            except SystemExit as exit:
                # As the interpreter does with sys.exit("message").
                if isinstance(exit.code, str):
                    print(exit.code, file=sys.stderr)
                code = 1 if isinstance(exit.code, str) else exit.code or 0
    finally:
        sys.stdin = saved_stdin
        os.environ.clear()
        os.environ.update(saved_env)
    return Done(code, out.getvalue(), err.getvalue())


async def dmrelay(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Done:
    """`dmrelay ARGS`, in-process, with the test session's settings."""
    return await asyncio.to_thread(_run_main, list(args), stdin, env or {})


async def dmrelay_process(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120
) -> Done:
    """`python -m app.cli ARGS` in a process of its own, with the test session's settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    return Done(process.returncode or 0, stdout.decode(), stderr.decode())
