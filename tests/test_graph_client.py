"""The Graph client says whether a call that got no answer may have reached Meta: delivery
waits for an echo before sending again only when it may have."""

import socket

import pytest

from app.meta.graph import Account, GraphClient, GraphUnreachable, create_session

ACCOUNT = Account("instagram_login", "17841400000000001", None, "sandbox-token")
BODY = {"recipient": {"id": "1602510301006188"}, "message": {"text": "hi"}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


async def test_a_refused_connection_never_reached_meta(clean):
    settings = clean.settings.model_copy(
        update={"meta_graph_url": f"http://127.0.0.1:{_closed_port()}"}
    )
    async with create_session(timeout_seconds=2.0) as http:
        with pytest.raises(GraphUnreachable) as caught:
            await GraphClient(settings, http).send_message(ACCOUNT, BODY)
    assert caught.value.maybe_delivered is False
    assert "Connect" in caught.value.detail


async def test_a_call_that_times_out_may_have_reached_meta(clean):
    await clean.sandbox("POST", "/_sandbox/faults", json={"timeout": {"times": 1}})
    # The sandbox never answers; the timeout leaves time enough to connect and send on a busy
    # machine, so that the call times out after reaching it.
    async with create_session(timeout_seconds=3.0) as http:
        with pytest.raises(GraphUnreachable) as caught:
            await GraphClient(clean.settings, http).send_message(ACCOUNT, BODY)
    assert caught.value.maybe_delivered is True
    # The sandbox did take it: sending again without waiting for the echo would duplicate it.
    assert len((await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]) == 1
