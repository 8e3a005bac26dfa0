from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

INSTAGRAM_GRAPH_URL = "https://graph.instagram.com"
FACEBOOK_GRAPH_URL = "https://graph.facebook.com"
# Instagram Login's authorize page and code exchange (meta doc §11.6).
INSTAGRAM_AUTHORIZE_URL = "https://www.instagram.com/oauth/authorize"
INSTAGRAM_CODE_EXCHANGE_URL = "https://api.instagram.com/oauth/access_token"

Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    """Configuration, read from the environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/dmrelay"
    # redis://[[user]:password@]host:port/db, or rediss:// for TLS (with ssl_cert_reqs,
    # ssl_ca_certs, ssl_certfile, ssl_keyfile as query options).
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Every call to PostgreSQL and Redis is bounded, so a stalled dependency answers a quick
    # 503 (and fails a worker's job, which is retried or swept) instead of hanging.
    database_connect_timeout_seconds: float = 5.0
    # Server-side statement_timeout (lock waits included); the driver gives up a little later
    # in case the server itself is not answering.
    database_statement_timeout_seconds: float = 10.0
    # Waiting for a free connection of the process's pool.
    database_pool_timeout_seconds: float = 5.0
    redis_connect_timeout_seconds: float = 2.0
    redis_timeout_seconds: float = 5.0
    # GET /readyz: how long each dependency has to answer.
    readiness_timeout_seconds: float = 2.0
    # Logs: one JSON object per line, or text for a terminal (app/core/logs.py).
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The worker's own HTTP port (GET /healthz, GET /metrics; `dmrelay worker --check`), on
    # all interfaces; unset, it serves none (several workers on one host need one each).
    worker_http_port: Port | None = None
    # When set, replaces both Graph hosts: that is how the sandbox is used.
    meta_graph_url: str | None = None
    meta_graph_version: str = "v25.0"
    meta_app_secret: str | None = None
    # Instagram-Login apps sign webhooks with the Instagram app secret instead.
    instagram_app_secret: str | None = None
    meta_verify_token: str | None = None
    # Encrypts Meta access tokens at rest (app.core.crypto), and nothing else: public ids use
    # a fixed alphabet (app.core.ids), so they are opaque but not secret.
    secret_key: str | None = None
    sandbox_webhook_url: str | None = None

    # Connecting accounts with Instagram Login: the Instagram app's id (its secret is
    # INSTAGRAM_APP_SECRET), and dmrelay's callback exactly as registered with the app
    # (https://<your host>/connect/instagram/callback).
    instagram_app_id: str | None = None
    instagram_redirect_uri: str | None = None
    # How long a connection link (its signed state) may be used.
    connect_state_seconds: int = 1800
    # Instagram Login tokens live 60 days; they are refreshed once at least 24 hours old and
    # this close to expiring (the refresh runs every REFRESH_TOKENS_INTERVAL_MINUTES).
    token_refresh_before_seconds: int = 7 * 86_400
    refresh_tokens_interval_minutes: int = 30
    # Backfill: Conversations API calls per second per account (Meta allows 2).
    backfill_calls_per_second: float = 2.0
    # appsecret_proof (always with a Page token; with an Instagram Login token for profiles
    # that opt in, as newly connected ones do when INSTAGRAM_LOGIN_APPSECRET_PROOF is set):
    # the timestamped form, with appsecret_time, when this is set.
    appsecret_proof_timestamped: bool = False
    instagram_login_appsecret_proof: bool = False
    # Once Meta refuses a profile's token (code 190), its other sends are held this long
    # (then tried, and failed if it is still refused), unless it is reconnected first.
    expired_hold_seconds: float = 3600.0

    # Request bodies, in bytes: refused with 413 once past the cap, before anything is
    # authenticated or parsed. The largest JSON body dmrelay takes (a send: 1000 bytes of
    # text, escaped, and a URL) is a few KiB; this leaves room without letting a client
    # (signed in or not) make the server hold megabytes per request.
    max_body_bytes: int = 2 * 1024 * 1024
    # Meta's webhook POSTs: a batch holds at most 1000 updates of about 1 KiB each (an
    # envelope, a text of at most 1000 bytes, CDN links), so 1 MiB holds a full batch. A
    # refused batch is retried by Meta (and logged here), so raise it if that happens.
    webhook_max_body_bytes: int = 1024 * 1024
    # Multipart media uploads (Postproxy's media_files), for the route that takes them
    # once it exists: Instagram's largest attachment (25 MB) and the form around it.
    media_upload_max_bytes: int = 27 * 1024 * 1024

    # Delivery. Meta answers a send within seconds; one still open after this is treated as
    # an unknown outcome (it may have been delivered).
    graph_timeout_seconds: float = 10.0
    # After an unknown outcome, how long to wait for Meta's echo before sending again.
    echo_wait_seconds: float = 5.0
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    # Pause after a throttle answer that does not say how long to wait.
    throttle_pause_seconds: float = 30.0
    # Sweeper: how often it looks for messages whose job is gone.
    sweep_interval_seconds: int = 5
    # Per-profile send rates (calls per second), shared by all workers.
    rate_text_instagram_login: float = 100.0
    rate_text_facebook_login: float = 300.0
    rate_audio_video: float = 10.0

    # Inbound participants: how often a profile is re-read from Meta (profile_pic links
    # expire within days), how soon after a failed read, and how long the participant-status
    # endpoint trusts what it stored.
    participant_refresh_seconds: int = 86_400
    participant_retry_seconds: int = 600
    participant_status_cache_seconds: int = 300
    # How old a participant's mirrored picture may grow before it is copied again.
    participant_avatar_max_age_seconds: int = 7 * 86_400

    # Inbound media: mirrored to a local directory (served at MEDIA_BASE_URL) or to an
    # S3-compatible bucket (pip install 'dmrelay[s3]').
    media_store: Literal["local", "s3"] = "local"
    media_dir: str = "media"
    media_base_url: str = "http://127.0.0.1:8000/media"
    media_max_bytes: int = 26_214_400  # Instagram's largest attachments (video) are 25 MB
    media_download_timeout_seconds: float = 60.0
    # A send's media URL: how long its server has to answer the request that tells its type
    # and size (the send's answer waits for it). Past it, the URL's extension decides.
    media_probe_timeout_seconds: float = 3.0
    # Only for tests and the sandbox: let downloads reach private and loopback addresses.
    media_allow_private_hosts: bool = False
    # The ports downloads may connect to (MEDIA_ALLOWED_PORTS=80,443,8443).
    media_allowed_ports: Annotated[frozenset[Annotated[int, Field(ge=1, le=65535)]], NoDecode] = (
        frozenset({80, 443})
    )
    # Meta forbids storing story-mention media; the CDN link is kept and checked instead.
    mirror_story_mentions: bool = False
    story_mention_check_seconds: float = 6 * 3600
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_public_base_url: str | None = None

    # Customer webhooks (app/webhooks). Each failed attempt is retried after the next delay
    # (WEBHOOK_RETRY_SCHEDULE_SECONDS=0,60,300,1800,7200: at once, then about 1 min, 5 min,
    # 30 min, 2 h); past the last, the event is given up for that endpoint.
    webhook_retry_schedule_seconds: Annotated[
        tuple[Annotated[float, Field(ge=0)], ...], NoDecode
    ] = (0.0, 60.0, 300.0, 1800.0, 7200.0)
    # Consecutive failed attempts that disable an endpoint (PATCH enabled=true resumes it).
    webhook_disable_after_failures: int = Field(default=15, ge=1)
    webhook_connect_timeout_seconds: float = 10.0
    # The endpoint must answer within this; 2xx is success.
    webhook_timeout_seconds: float = 30.0
    # Only for development and tests: http:// endpoints, and private or loopback addresses.
    webhook_allow_http: bool = False
    webhook_allow_private_hosts: bool = False
    # Events every endpoint is done with are deleted after this (the delivery log stays).
    webhook_event_retention_seconds: int = 7 * 86_400
    # How often a worker looks for endpoints with events due that no worker is sending (a
    # retry's time come, a worker gone); new events are sent at once (PostgreSQL NOTIFY).
    webhook_poll_seconds: float = 1.0

    @field_validator("media_allowed_ports", "webhook_retry_schedule_seconds", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _use_asyncpg(cls, url: str) -> str:
        # A plain postgresql:// URL is accepted; SQLAlchemy needs the driver named.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+asyncpg://" + url[len(prefix) :]
        # Checked here, so that a wrong one stops the process at start with one line
        # (app/core/preflight.py); the URL itself is never quoted: it may hold a password.
        if urlsplit(url).scheme != "postgresql+asyncpg":
            raise ValueError("not a PostgreSQL URL (postgresql://user:password@host:5432/name)")
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("not a Redis URL (redis://host:6379/0, rediss://… or unix://…)")
        return url

    @field_validator(
        "meta_graph_url",
        "media_base_url",
        "sandbox_webhook_url",
        "s3_endpoint_url",
        "s3_public_base_url",
    )
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if not url:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        return url

    def instagram_login_url(self, which: Literal["authorize", "exchange"]) -> str:
        if self.meta_graph_url:
            path = "oauth/authorize" if which == "authorize" else "oauth/access_token"
            return f"{self.meta_graph_url.rstrip('/')}/{path}"
        return INSTAGRAM_AUTHORIZE_URL if which == "authorize" else INSTAGRAM_CODE_EXCHANGE_URL

    def graph_base_url(self, connection: str) -> str:
        if self.meta_graph_url:
            return self.meta_graph_url.rstrip("/")
        # Imported here: the profiles' models import this module (through app.core.db).
        from app.profiles.models import Connection

        if connection == Connection.INSTAGRAM_LOGIN:
            return INSTAGRAM_GRAPH_URL
        return FACEBOOK_GRAPH_URL


@lru_cache
def get_settings() -> Settings:
    return Settings()
