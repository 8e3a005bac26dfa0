"""Every status, direction and kind is a StrEnum, and the database's CHECK constraints (written
by the migrations) allow exactly its values: adding a value to an enum without a migration, or
the reverse, fails here."""

import re
from enum import StrEnum

import asyncpg
import pytest

from app.chat_syncs.models import ChatSyncStatus, ChatSyncTrigger
from app.core.db import Base
from app.core.models import one_of
from app.events.models import CustomerEventType
from app.inbound.models import EventKind, InboundEventStatus, WebhookDeliveryStatus
from app.messages.models import Direction, MessageStatus
from app.profiles.models import Connection, ProfileStatus
from app.webhooks.models import DispatchStatus

CONSTRAINED = [
    ("messages", "direction", Direction),
    ("messages", "status", MessageStatus),
    ("webhook_deliveries", "status", WebhookDeliveryStatus),
    ("inbound_events", "status", InboundEventStatus),
    ("inbound_events", "kind", EventKind),
    ("profiles", "status", ProfileStatus),
    ("profiles", "connection", Connection),
    ("customer_events", "type", CustomerEventType),
    ("customer_webhook_dispatches", "status", DispatchStatus),
    ("chat_syncs", "status", ChatSyncStatus),
    ("chat_syncs", "trigger", ChatSyncTrigger),
]


async def _allowed(settings, table: str, column: str) -> set[str]:
    url = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(url)
    try:
        definition = await connection.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1",
            f"ck_{table}_{column}",
        )
    finally:
        await connection.close()
    assert definition, f"no CHECK constraint on {table}.{column}"
    return set(re.findall(r"'([^']*)'", definition))


@pytest.mark.parametrize(("table", "column", "enum"), CONSTRAINED)
async def test_the_database_allows_exactly_the_enums_values(
    database, settings, table: str, column: str, enum: type[StrEnum]
):
    assert await _allowed(settings, table, column) == {member.value for member in enum}


@pytest.mark.parametrize(("table", "column", "enum"), CONSTRAINED)
def test_the_models_constraint_is_generated_from_the_enum(table, column, enum):
    declared = {
        str(constraint.sqltext)
        for constraint in Base.metadata.tables[table].constraints
        if constraint.name == f"ck_{table}_{column}" or constraint.name == column
    }
    assert declared == {str(one_of(column, enum).sqltext)}
