import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.settings import get_settings
from app.models import metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = create_async_engine(url, hide_parameters=True)  # as app.core.db's engines
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


asyncio.run(_run_online())
