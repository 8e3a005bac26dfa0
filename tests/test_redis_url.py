"""REDIS_URL with a password (the default user's, or an ACL user's) and with TLS (rediss://),
against a throwaway redis-server of our own (tests/faults.py) that requires both: every way
dmrelay connects (its Redis client, arq's RedisSettings, the API, the worker) gets in."""

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from arq.connections import create_pool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.core import queue
from app.core.jobs import Job, JobName, enqueue
from app.core.settings import Settings
from tests.conftest import wait_for
from tests.faults import Processes, Redis, redis_server
from tests.test_availability import CUSTOMER, _api

pytestmark = pytest.mark.skipif(redis_server() is None, reason="redis-server is not installed")

# Characters a URL must percent-encode, so that decoding it is tested too.
PASSWORD = "p@ss/w:rd%?#&"
USER = "dmrelay"


def _supports_tls() -> bool:
    """Whether this redis-server was built with TLS (Debian's is). One without it rejects the
    option (Redis), or starts and then stops for want of TLS support (Valkey); one with it
    stops over the missing certificate files."""
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            [
                redis_server(),
                "--port",
                "0",
                "--tls-port",
                "1",
                "--tls-cert-file",
                "missing",
                "--tls-key-file",
                "missing",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=10,
        )
    output = result.stdout + result.stderr
    return "tls-port" not in output and "TLS support" not in output


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for 127.0.0.1: (cert, key, CA cert)."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dmrelay test CA")])
    ca_cert = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = certificate(name, ca_name, key.public_key(), ca_key, ca=False)

    paths = directory / "redis.crt", directory / "redis.key", directory / "ca.crt"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for path in paths:
        path.chmod(0o644)  # redis-server may run as another user than the one writing them
    return paths


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[Redis]:
    root = Path(tempfile.mkdtemp(prefix="dmrelay-redis-auth-"))
    tls = _certificates(root) if _supports_tls() else None
    redis = Redis(root, password=PASSWORD, user=USER, tls=tls)
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()
        shutil.rmtree(root, ignore_errors=True)


def _urls(redis: Redis) -> dict[str, str]:
    password = quote(PASSWORD, safe="")
    urls = {
        "default user": f"redis://:{password}@127.0.0.1:{redis.port}/0",
        "ACL user": f"redis://{USER}:{password}@127.0.0.1:{redis.port}/1",
    }
    if redis.tls is not None:
        ca = quote(str(redis.tls[2]), safe="")
        urls["TLS, verified"] = (
            f"rediss://:{password}@127.0.0.1:{redis.tls_port}/2"
            f"?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        )
        urls["TLS, unverified"] = (
            f"rediss://{USER}:{password}@127.0.0.1:{redis.tls_port}/3?ssl_cert_reqs=none"
        )
    return urls


def _tls_url(redis: Redis) -> str:
    urls = _urls(redis)
    return urls.get("TLS, verified", urls["ACL user"])


@pytest.mark.parametrize("kind", ["default user", "ACL user", "TLS, verified", "TLS, unverified"])
async def test_redis_clients_connect_with_a_password_and_tls(
    secured_redis: Redis, settings: Settings, kind: str
):
    if secured_redis.tls is None and kind.startswith("TLS"):
        # Then the URL is at least read as TLS.
        url = "rediss://127.0.0.1:1/0?ssl_cert_reqs=none"
        assert queue.redis_settings(settings.model_copy(update={"redis_url": url})).ssl
        pytest.skip("this redis-server was built without TLS")
    local = settings.model_copy(update={"redis_url": _urls(secured_redis)[kind]})

    pool = queue.arq_pool(local, default_queue_name="test:auth")
    try:
        assert await pool.ping()
        assert await enqueue(pool, Job(JobName.SEND_CHAT, (1,), "auth-test"))
    finally:
        await pool.aclose()

    # arq's own pool, as arq's tools (and a Worker without dmrelay's pool) build it.
    arq_settings = queue.redis_settings(local)
    assert arq_settings.ssl == kind.startswith("TLS")
    pool = await create_pool(arq_settings, job_deserializer=queue.unpack_job)
    try:
        assert await pool.exists("arq:job:auth-test")
    finally:
        await pool.aclose()


async def test_the_api_and_the_worker_use_a_password_protected_tls_redis(
    secured_redis: Redis, account, clean
):
    url = _tls_url(secured_redis)
    local = clean.settings.model_copy(update={"redis_url": url})
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    async with _api(local) as api:

        async def ready() -> bool:
            # Waited for: the shared PostgreSQL may be briefly out of connections.
            answer = await api.get("/readyz")
            return answer.json() == {
                "status": "ready",
                "checks": {"postgresql": "ok", "redis": "ok", "migrations": "ok"},
            }

        await wait_for(ready, timeout=30)
        send = await api.post(
            f"/api/chats/{chat.id}/messages",
            json={"body": "through TLS"},
            headers={"Authorization": f"Bearer {account.token}"},
        )
        assert send.status_code == 202, send.text

    pool = queue.arq_pool(local)
    processes = Processes(secured_redis.root, {**os.environ, "REDIS_URL": url})
    try:
        # The API put the chat's delivery job there, for the worker to take.
        jobs = await pool.zrange("arq:queue", 0, -1)
        assert jobs
        processes.start("worker")

        async def worker_took_it() -> bool:
            taken = not await pool.exists(*(b"arq:job:" + job for job in jobs))
            return taken and bool(await pool.exists("arq:queue:health-check"))

        try:
            await wait_for(worker_took_it, timeout=60)
        except AssertionError:
            raise AssertionError(processes.logs()) from None
    finally:
        processes.kill_all()
        await pool.flushdb()
        await pool.aclose()

    async def published() -> bool:
        return (await account.client.messages.get(send.json()["id"])).status == "published"

    await wait_for(published, timeout=30)
