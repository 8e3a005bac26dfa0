"""Where mirrored media lives: a local directory (the default) or an S3-compatible bucket.

Keys are random, so a URL cannot be guessed: media is served without an API key, like
Meta's own CDN links.
"""

import asyncio
import errno
import os
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from app.core.settings import Settings

# The keys dmrelay makes (app/media/service.py): URL-safe segments, each a file name the file
# system takes (at most 255 bytes). Anything else names no stored file, and is not looked up:
# the file system would refuse a longer name with an error rather than "no such file".
KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,254})*")
# A key naming no file, in any way a client can: missing, a directory, under a file, too long
# for the filesystem. Any other error opening one is the server's trouble.
NO_SUCH_FILE = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP}


class MediaStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store the bytes under the key; returns the URL they are served at."""

    async def put_file(self, key: str, file: BinaryIO, content_type: str) -> str:
        """Store a file's content, copied in chunks; returns the URL it is served at."""

    async def delete(self, keys: list[str]) -> None: ...


class LocalStore:
    """Files under MEDIA_DIR, served by dmrelay itself at MEDIA_BASE_URL (see router.py)."""

    def __init__(self, directory: Path, base_url: str) -> None:
        self.directory = directory.resolve()
        self.base_url = base_url.rstrip("/")

    def path_of(self, key: str) -> Path | None:
        """The file for a key, or None if the key cannot be one dmrelay made (see KEY) or
        points outside the directory."""
        if not KEY.fullmatch(key):
            return None
        path = (self.directory / key).resolve()
        return path if path.is_relative_to(self.directory) and path != self.directory else None

    def open(self, key: str) -> BinaryIO | None:
        """The stored file for a key, open for reading, or None if there is none."""
        path = self.path_of(key)
        if path is None:
            return None
        try:
            return path.open("rb")
        except OSError as error:
            if error.errno in NO_SUCH_FILE:
                return None
            raise

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        await asyncio.to_thread(self._write, key, data)
        return f"{self.base_url}/{key}"

    async def put_file(self, key: str, file: BinaryIO, content_type: str) -> str:
        await asyncio.to_thread(self._write, key, file)
        return f"{self.base_url}/{key}"

    def _write(self, key: str, data: bytes | BinaryIO) -> None:
        path = self.path_of(key)
        if path is None:
            raise ValueError(f"invalid media key {key!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees a half-written file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial_file:
            if isinstance(data, bytes):
                partial_file.write(data)
            else:
                shutil.copyfileobj(data, partial_file)
        os.replace(partial_file.name, path)

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self.path_of(key)
            if path is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)


class S3Store:
    """An S3-compatible bucket through boto3 (the optional `s3` extra), run in threads."""

    def __init__(self, settings: Settings) -> None:
        import boto3  # optional: only S3 deployments install it

        if not settings.s3_bucket or not settings.s3_public_base_url:
            raise ValueError("MEDIA_STORE=s3 needs S3_BUCKET and S3_PUBLIC_BASE_URL")
        self.bucket = settings.s3_bucket
        self.base_url = settings.s3_public_base_url.rstrip("/")
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
        )

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        put_object = partial(
            self.client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
        )
        await asyncio.to_thread(put_object)
        return f"{self.base_url}/{key}"

    async def put_file(self, key: str, file: BinaryIO, content_type: str) -> str:
        upload = partial(
            self.client.upload_fileobj,
            file,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
        )
        await asyncio.to_thread(upload)  # multipart, in chunks, for a large file
        return f"{self.base_url}/{key}"

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)


def create_store(settings: Settings) -> MediaStore:
    if settings.media_store == "s3":
        return S3Store(settings)
    return LocalStore(Path(settings.media_dir), settings.media_base_url)
