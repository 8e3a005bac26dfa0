"""What a process checks before it serves: a wrong setting stops it with one line saying what
to fix (not a traceback, and not a process that answers 500s until someone reads its logs).

A dependency that is merely down (refused, not answering) is not a configuration error: the
API and the worker start anyway and wait for it (GET /readyz says so meanwhile), as they
would for an outage later on. A dependency that answers "no" is: a database or Redis db that
does not exist, refused credentials, a host name that does not resolve, a schema this version
cannot use, a SECRET_KEY that cannot read the stored tokens.
"""

import asyncio
import os
import socket
import sys
from enum import StrEnum
from typing import NoReturn

import asyncpg
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.engine import make_url

from app.core import crypto, tracing
from app.core.availability import Schema, behind_sentence, schema_of
from app.core.settings import Settings, get_settings


class ConfigError(Exception):
    """A setting that keeps the process from working; its message is the one line shown."""


class Role(StrEnum):
    API = "api"
    WORKER = "worker"
    MIGRATE = "migrate"
    OTHER = "other"  # the CLI's short commands and the sandbox: settings parsed, no probe


def fail(command: str, message: str) -> NoReturn:
    sys.exit(f"dmrelay {command}: {message}")


def warn(command: str, message: str) -> None:
    print(f"dmrelay {command}: {message}", file=sys.stderr, flush=True)


def load_settings() -> Settings:
    """The settings, or a ConfigError naming each variable that is wrong (never its value:
    it may be a secret)."""
    try:
        return get_settings()
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_input=False, include_url=False):
            name = ".".join(str(part) for part in detail["loc"]).upper()
            message = detail["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigError("; ".join(problems)) from None


def check(role: Role, command: str) -> Settings:
    """Load and check the settings for `role`; exits with one line if they are wrong."""
    try:
        settings = load_settings()
        if role in (Role.API, Role.WORKER) and not settings.secret_key:
            raise ConfigError(
                "SECRET_KEY is not set: it encrypts the access tokens stored in the database "
                "(any long random string; keep it stable)"
            )
        if role == Role.API and not (settings.meta_app_secret or settings.instagram_app_secret):
            warn(
                command,
                "neither META_APP_SECRET nor INSTAGRAM_APP_SECRET is set: Meta's webhooks "
                "cannot be verified, and are refused",
            )
        if role in (Role.API, Role.WORKER):
            try:
                tracing.exporter_from_environment(os.environ)
            except tracing.TracingConfigError as error:
                raise ConfigError(str(error)) from None
            for warning in asyncio.run(_probe(settings)):
                warn(command, warning)
    except ConfigError as error:
        fail(command, str(error))
    return settings


async def _probe(settings: Settings) -> list[str]:
    """Ask PostgreSQL and Redis; raises ConfigError for a wrong setting, answers warnings for
    a dependency that is only down."""
    results = await asyncio.gather(
        _probe_postgresql(settings), _probe_redis(settings), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if isinstance(result, str)]


def _down(what: str, error: BaseException) -> str:
    reason = str(error) or type(error).__name__
    return (
        f"{what} is not answering ({reason}); starting anyway, and waiting for it "
        "(GET /readyz answers 503 meanwhile)"
    )


async def _probe_postgresql(settings: Settings) -> str | None:
    url = make_url(settings.database_url)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(plain, timeout=settings.database_connect_timeout_seconds)
    except socket.gaierror as error:
        raise ConfigError(
            f"DATABASE_URL names the host {url.host!r}, which does not resolve ({error})"
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise ConfigError(
            f"the database {url.database!r} of DATABASE_URL does not exist: run `dmrelay migrate`"
        ) from None
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as e:
        raise ConfigError(f"PostgreSQL refused DATABASE_URL's credentials: {e}") from None
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as error:
        return _down("PostgreSQL", error)
    try:
        try:
            version = await connection.fetchval("SELECT max(version_num) FROM alembic_version")
        except asyncpg.UndefinedTableError:
            version = None
        if schema_of(version) == Schema.BEHIND:
            raise ConfigError(behind_sentence(version))
        stored = await connection.fetchval(
            "SELECT access_token_encrypted FROM profiles ORDER BY id DESC LIMIT 1"
        )
    finally:
        await connection.close()
    if stored is not None:
        try:
            crypto.decrypt(settings.secret_key, stored)
        except crypto.MissingSecretKey:
            raise ConfigError(
                "SECRET_KEY cannot decrypt the access tokens stored in the database: it is not "
                "the key they were encrypted with (it must stay the same)"
            ) from None
    return None


async def _probe_redis(settings: Settings) -> str | None:
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
    )
    try:
        await redis.ping()
    except AuthenticationError as error:
        raise ConfigError(f"Redis refused REDIS_URL's credentials: {error}") from None
    except ResponseError as error:  # say, a db number past the server's `databases`
        raise ConfigError(f"Redis refused REDIS_URL: {error}") from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        if isinstance(error.__cause__ or error.__context__, socket.gaierror):
            host = redis.connection_pool.connection_kwargs.get("host")
            raise ConfigError(
                f"REDIS_URL names the host {host!r}, which does not resolve"
            ) from None
        return _down("Redis", error)
    finally:
        await redis.aclose()
    return None
