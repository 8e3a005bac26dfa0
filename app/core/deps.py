"""Request-scoped dependencies: the database session and the API principal."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import session_scope


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    state = request.app.state
    async for session in session_scope(state.sessionmaker, state.arq_pool):
        yield session


# scope="function": commit (and enqueue) before the response is sent, so a client that
# reads right after a 2xx sees what it wrote.
Session = Annotated[AsyncSession, Depends(_session, scope="function")]
