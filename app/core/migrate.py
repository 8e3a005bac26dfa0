"""`dmrelay migrate`: create the database if it is missing, then upgrade it."""

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from app.core.settings import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


async def create_database_if_missing(database_url: str, timeout: float = 60.0) -> bool:
    url = make_url(database_url)
    name = url.database
    if name is None:
        raise ValueError("DATABASE_URL names no database to create or upgrade")
    admin = url.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=timeout)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Identifiers cannot be bound as parameters; quote it as PostgreSQL does.
            await connection.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
        return not exists
    finally:
        await connection.close()


def migrate(settings: Settings) -> None:
    asyncio.run(
        create_database_if_missing(settings.database_url, settings.database_connect_timeout_seconds)
    )
    command.upgrade(alembic_config(settings), "head")


@dataclass(frozen=True)
class Revisions:
    """The migrations this version of dmrelay ships: the head it needs, and every one it
    knows (a database at an unknown one was migrated by a newer version)."""

    head: str
    known: frozenset[str]


@lru_cache
def revisions() -> Revisions:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    return Revisions(
        head=script.get_current_head() or "",
        known=frozenset(revision.revision for revision in script.walk_revisions()),
    )
