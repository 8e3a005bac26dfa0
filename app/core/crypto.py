"""Secrets at rest (Meta access tokens) are encrypted with a key derived from SECRET_KEY."""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken


class MissingSecretKey(RuntimeError):
    pass


@lru_cache
def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"dmrelay-token-encryption:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _require(secret_key: str | None) -> str:
    if not secret_key:
        raise MissingSecretKey("SECRET_KEY is not set: it is needed to encrypt access tokens")
    return secret_key


def encrypt(secret_key: str | None, plaintext: str) -> str:
    return _fernet(_require(secret_key)).encrypt(plaintext.encode()).decode()


def decrypt(secret_key: str | None, ciphertext: str) -> str:
    try:
        return _fernet(_require(secret_key)).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise MissingSecretKey("the access token cannot be decrypted with this SECRET_KEY") from exc
