"""Access tokens never reach a log line, an error message or an API answer; and no secret or
message text is in the logs of a whole test run."""

import asyncio
import json
import logging
import os
import sys
import traceback

import pytest
from sqlalchemy.exc import DBAPIError

from app.core import ids, logs
from app.meta.graph import Account
from app.profiles import service as profiles
from tests.cli import ROOT
from tests.conftest import LAST_TEST, RUN_LOG, SECRETS_USED, connect
from tests.test_delivery import settle

TOKEN = "IGAAsecret-graph-token-4f1c9e"
CUSTOMER = "1700000000000042"


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as a handler would write it, tracebacks included."""
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.extend(traceback.format_exception(*record.exc_info))
    return "\n".join(lines)


async def test_a_graph_error_quoting_the_token_is_stored_and_logged_without_it(clean, caplog):
    caplog.set_level(logging.DEBUG)
    account = await connect(clean, token=TOKEN)
    try:
        chat = await account.client.chats.create(account.profile_id, CUSTOMER)
        # Meta's answer to a token it cannot parse quotes the token.
        await clean.sandbox("POST", "/_sandbox/faults", json={"malformed_tokens": [TOKEN]})
        message = await account.client.messages.send(chat.id, body="hello")
        (failed,) = await settle(account.client, [message])
        assert failed.status == "failed"
        assert failed.error_details.platform_error_code == "190"
        assert failed.error_details.platform_error_message.startswith("Malformed access token")
        assert TOKEN not in failed.error_details.platform_error_message
        assert "app.messages.sender" in {r.name for r in caplog.records}  # it was logged
        assert TOKEN not in _logged(caplog)
    finally:
        await account.client.close()


def test_an_account_is_logged_without_its_token():
    account = Account("instagram_login", "17841400000000001", None, TOKEN)
    assert TOKEN not in repr(account) and TOKEN not in str(account)


async def test_a_failed_statement_names_no_parameters(clean):
    async with clean.sessionmaker() as session, session.begin():
        group = await profiles.ensure_group(session, "default")
    with pytest.raises(DBAPIError) as failure:
        async with clean.sessionmaker() as session, session.begin():
            # Breaks a check constraint (a Facebook-Login profile needs its Page id).
            await profiles.add_profile(
                session,
                clean.settings,
                platform_id="17841400000000555",
                access_token=TOKEN,
                connection="facebook_login",
                group=group,
            )
    message = str(failure.value)
    assert "violates check constraint" in message
    assert "gAAAAA" not in message  # the encrypted token (Fernet's prefix)
    assert "17841400000000555" not in message


async def test_public_ids_owe_nothing_to_secret_key():
    """SECRET_KEY only encrypts access tokens: ids handed out stay valid if it changes."""
    code = "from app.core import ids; print(ids.encode(ids.Kind.CHAT, 42))"

    async def encoded_with(secret_key: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            cwd=ROOT,
            env={**os.environ, "SECRET_KEY": secret_key},
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await process.communicate()
        return stdout.decode().strip()

    first, second = await asyncio.gather(encoded_with("one-key"), encoded_with("another-key"))
    assert first == second == ids.encode(ids.Kind.CHAT, 42)


def test_a_log_line_is_one_json_object_with_the_bound_ids():
    record = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "failed: %s", ("why",), None)
    try:
        raise ValueError("a\nmulti-line\nerror")
    except ValueError:
        record.exc_info = sys.exc_info()
    with logs.bound(request_id="r1", chat_id=7), logs.bound(message_id=42):
        line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed: why" and parsed["level"] == "error"
    assert (parsed["request_id"], parsed["chat_id"], parsed["message_id"]) == ("r1", 7, 42)
    assert "multi-line" in parsed["exception"]
    # Unbound once the block ends.
    assert "chat_id" not in json.loads(logs.JsonFormatter().format(record))


async def test_no_secret_or_message_text_in_the_whole_runs_logs(clean):
    """Runs last (tests/conftest.py): every line the run logged, as a dmrelay process writes
    it, holds none of the secrets, tokens and message texts the run used. First a send that
    Meta refuses quoting the token, and one it accepts, so that there is something to read
    even when this test runs alone."""
    assert test_no_secret_or_message_text_in_the_whole_runs_logs.__name__ == LAST_TEST
    token = "IGAA-whole-run-secret-token-77c1"
    account = await connect(clean, token=token)
    try:
        chat = await account.client.chats.create(account.profile_id, CUSTOMER)
        texts = [f"a private note about order 88123, {n}, that stays out of logs" for n in (1, 2)]
        SECRETS_USED.update(texts)
        published = await account.client.messages.send(chat.id, body=texts[0])
        (published,) = await settle(account.client, [published])
        assert published.status == "published"
        await clean.sandbox("POST", "/_sandbox/faults", json={"malformed_tokens": [token]})
        refused = await account.client.messages.send(chat.id, body=texts[1])
        (refused,) = await settle(account.client, [refused])
        assert refused.status == "failed"
    finally:
        await account.client.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = RUN_LOG.read_text(encoding="utf-8").splitlines()
    assert lines, "nothing was logged"
    for line in lines:
        json.loads(line)  # one JSON object per line
    everything = "\n".join(lines)
    assert "gAAAAA" not in everything  # an encrypted token (Fernet's prefix)
    found = sorted(secret for secret in SECRETS_USED if secret in everything)
    assert not found, f"in the logs: {found}"
