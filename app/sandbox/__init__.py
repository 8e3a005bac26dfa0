"""The sandbox Graph API: a local fake of Meta's Instagram messaging endpoints."""

import uvicorn

from app.sandbox.app import create_app


def run(host: str = "127.0.0.1", port: int = 8001) -> None:
    uvicorn.run(create_app(), host=host, port=port)
