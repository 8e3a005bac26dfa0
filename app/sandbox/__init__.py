"""The sandbox Graph API: a local fake of Meta's Instagram messaging endpoints."""

import uvicorn

from app.sandbox.app import create_app


def run(host: str = "127.0.0.1", port: int = 8001) -> None:
    # No access log: a line per Graph call costs CPU the sandbox shares with dmrelay when both
    # run on one machine; GET /_sandbox/sent lists what was sent.
    uvicorn.run(create_app(), host=host, port=port, access_log=False)
