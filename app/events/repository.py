"""Every query on customer events."""

from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.events.models import CustomerEvent

# Core, not the ORM: inbound's hot path cannot afford per-row work in Python (service.py).
_customer_events = cast(Table, CustomerEvent.__table__)


async def insert_all(session: AsyncSession | AsyncConnection, events: list[dict[str, Any]]) -> None:
    """Store these events (column values), in this order, by one statement."""
    await session.execute(insert(_customer_events), events)
