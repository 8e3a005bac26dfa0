from functools import lru_cache

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

INSTAGRAM_GRAPH_URL = "https://graph.instagram.com"
FACEBOOK_GRAPH_URL = "https://graph.facebook.com"


class Settings(BaseSettings):
    """Configuration, read from the environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/dmrelay"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # When set, replaces both Graph hosts: that is how the sandbox is used.
    meta_graph_url: str | None = None
    meta_graph_version: str = "v25.0"
    meta_app_secret: str | None = None
    meta_verify_token: str | None = None
    # Encrypts access tokens at rest and keys the public-id alphabet.
    secret_key: str | None = None
    sandbox_webhook_url: str | None = None

    @field_validator("database_url")
    @classmethod
    def _use_asyncpg(cls, url: str) -> str:
        # A plain postgresql:// URL is accepted; SQLAlchemy needs the driver named.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        return url

    def graph_base_url(self, connection: str) -> str:
        if self.meta_graph_url:
            return self.meta_graph_url.rstrip("/")
        return INSTAGRAM_GRAPH_URL if connection == "instagram_login" else FACEBOOK_GRAPH_URL


@lru_cache
def get_settings() -> Settings:
    return Settings()
