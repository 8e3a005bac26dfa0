"""The express lane (app/core/express.py) answers as the FastAPI routes behind it do."""

import json

import httpx

from app.inbound.signature import signature_of
from tests.conftest import IG_ACCOUNT_ID
from tests.inbound import scalar, settled


async def test_a_webhook_is_stored_alike_by_the_express_lane_and_the_route(account, clean):
    # A query string sends a request on to the FastAPI route; without one, the lane takes it.
    answers = []
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        for n, query in enumerate(({"via": "route"}, {})):
            item = {
                "sender": {"id": "557"},
                "recipient": {"id": IG_ACCOUNT_ID},
                "timestamp": 1_763_000_000_000 + n,
                "message": {"mid": f"aWdf_express_{n}", "text": f"hello {n}"},
            }
            body = json.dumps(
                {"object": "instagram", "entry": [{"id": IG_ACCOUNT_ID, "messaging": [item]}]}
            )
            response = await http.post(
                "/webhooks/instagram",
                params=query,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": signature_of(
                        clean.settings.meta_app_secret, body.encode()
                    ),
                },
            )
            answers.append(
                (response.status_code, response.json(), "x-request-id" in response.headers)
            )
    assert answers == [(200, {"received": True}, True)] * 2
    await settled(clean)
    assert (
        await scalar(clean, "SELECT count(*) FROM webhook_deliveries WHERE status = 'processed'")
        == 2
    )
    messages = await account.client.messages.list(
        (await account.client.chats.list(account.profile_id)).data[0].id
    )
    assert sorted(m.body for m in messages.data) == ["hello 0", "hello 1"]
