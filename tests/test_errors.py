"""Error answers: one shape everywhere, statuses that say what went wrong, and `errors` that
name only fields the request really has (app/core/errors.py)."""

from datetime import timedelta

import httpx
import pytest
from postproxy import ValidationError
from sqlalchemy import func, update

from app.chats.models import Chat

CUSTOMER = "1602510301006188"


async def _chat_id(account) -> str:
    return (await account.client.chats.create(account.profile_id, CUSTOMER)).id


async def _both_lanes(account, path: str, **request) -> list[httpx.Response]:
    """The request sent to the FastAPI route (a query string keeps it off the express lane)
    and as the express lane sees it (app/messages/express.py)."""
    group = (await account.client.profiles.get(account.profile_id)).profile_group_id
    headers = {"Authorization": f"Bearer {account.token}", **request.pop("headers", {})}
    async with httpx.AsyncClient(base_url=account.client.base_url, headers=headers) as http:
        return [
            await http.post(path, params=query, **request)
            for query in ({"profile_group_id": group}, {})
        ]


def _assert_shape(response: httpx.Response) -> dict:
    answer = response.json()
    assert set(answer) == {"error", "errors"}, answer
    assert isinstance(answer["error"], str) and answer["error"]
    assert isinstance(answer["errors"], list)
    return answer


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"body": "hi",,}', "Expecting property name enclosed in double quotes at line 1"),
        (b'{"body": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at position 13)"),
        (b"[" * 5000, "nested too deeply"),
    ],
    ids=["invalid JSON", "invalid UTF-8", "too deep"],
)
async def test_a_body_that_cannot_be_parsed_is_400_in_both_lanes(account, content, says):
    path = f"/api/chats/{await _chat_id(account)}/messages"
    headers = {"Content-Type": "application/json"}
    for response in await _both_lanes(account, path, content=content, headers=headers):
        assert response.status_code == 400, response.text
        answer = _assert_shape(response)
        assert answer["error"].startswith("The request body is not valid JSON")
        assert says in answer["error"]
        # The character position is no field name, and the body as a whole is not one either.
        assert answer["errors"] == []


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
    ids=["text/plain", "form", "no content type"],
)
async def test_a_body_not_declared_as_json_is_415_saying_so(account, headers):
    path = f"/api/chats/{await _chat_id(account)}/messages"
    for response in await _both_lanes(account, path, content=b'{"body": "hi"}', headers=headers):
        assert response.status_code == 415, response.text
        answer = _assert_shape(response)
        assert "Content-Type: application/json" in answer["error"]
        # Not a complaint about the message's text field, which is called `body`.
        assert "valid dictionary" not in answer["error"]
        assert answer["errors"] == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "The request body is missing"),
        (b"[1]", "must be a JSON object, not an array"),
        (b'"hi"', "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
    ],
)
async def test_a_json_body_that_is_not_an_object_is_422_naming_no_field(account, content, says):
    path = f"/api/chats/{await _chat_id(account)}/messages"
    headers = {"Content-Type": "application/json"}
    for response in await _both_lanes(account, path, content=content, headers=headers):
        assert response.status_code == 422, response.text
        answer = _assert_shape(response)
        assert says in answer["error"]
        assert answer["errors"] == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"body": 5}, ["body"]),
        ({"body": "hi", "colour": "red"}, ["colour"]),
        ({}, ["body", "media"]),
        ({"body": "hi", "media": ["https://cdn.example/a.png"]}, ["body", "media"]),
        (
            {"body": "hi", "reply_markup": {"a": 1}, "template": {"name": "t"}},
            ["reply_markup", "template"],
        ),
        (
            {"body": "hi", "quick_replies": [{"title": "a"}], "buttons": [1]},
            ["quick_replies.0.payload", "buttons.0"],
        ),
        ({"media": ["https://cdn.example/a.exe"]}, ["media.0"]),
        ({"media": ["https://a.example/1.png", "https://a.example/2.png"]}, ["media"]),
    ],
)
async def test_field_errors_name_the_fields_of_the_request(account, body, fields):
    path = f"/api/chats/{await _chat_id(account)}/messages"
    for response in await _both_lanes(account, path, json=body):
        assert response.status_code == 422, response.text
        answer = _assert_shape(response)
        assert [e["field"] for e in answer["errors"]] == fields
        for problem in answer["errors"]:
            assert problem["message"] in answer["error"]


async def test_a_refusal_about_the_chat_names_no_request_field(account, clean):
    chat_id = await _chat_id(account)
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(update(Chat).values(last_inbound_at=func.now() - timedelta(days=2)))
    for response in await _both_lanes(
        account, f"/api/chats/{chat_id}/messages", json={"body": "x"}
    ):
        assert response.status_code == 422
        answer = _assert_shape(response)
        assert "messaging window is closed" in answer["error"]
        assert answer["errors"] == []
    with pytest.raises(ValidationError, match="last_inbound_at"):
        await account.client.messages.send(chat_id, body="x")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/chats/{chat}/messages", "GET, POST"),
        ("DELETE", "/api/chats/{chat}", "GET"),
        ("GET", "/api/messages/{chat}/retry", "POST"),
        ("PATCH", "/webhooks/instagram", "GET, POST"),
        ("POST", "/api/profiles", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_an_allow_header(account, method, path, allowed):
    path = path.format(chat=await _chat_id(account))
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        response = await http.request(
            method, path, headers={"Authorization": f"Bearer {account.token}"}
        )
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    answer = _assert_shape(response)
    assert answer["error"] == f"{method} is not allowed on {path}; it takes {allowed}."
    assert answer["errors"] == []


async def test_every_error_has_the_same_shape(account):
    chat_id = await _chat_id(account)
    key = {"Authorization": f"Bearer {account.token}"}
    json = {**key, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        answers = {
            401: await http.get("/api/profiles"),
            404: await http.get("/api/chats/nope", headers=key),
            405: await http.delete("/api/profiles", headers=key),
            422: await http.get("/api/profiles/x/chats?per_page=0", headers=key),
            400: await http.post(f"/api/chats/{chat_id}/messages", content=b"{", headers=json),
            415: await http.post(f"/api/chats/{chat_id}/messages", content=b"{}", headers=key),
        }
        unknown = await http.get("/no/such/thing", headers=key)
        signed = await http.post("/webhooks/instagram", content=b"{}")
    for status, response in answers.items():
        assert response.status_code == status, response.text
        _assert_shape(response)
    assert unknown.status_code == 404
    assert _assert_shape(unknown)["error"] == "There is no endpoint GET /no/such/thing."
    assert signed.status_code == 401
    _assert_shape(signed)
    assert answers[422].json()["errors"] == [
        {"field": "per_page", "message": "per_page: Input should be greater than or equal to 1"}
    ]


async def test_the_openapi_document_shows_the_error_shape_dmrelay_sends(stack):
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        spec = (await http.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            refused = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert refused, (method, path)
            for status, response in refused.items():
                # Never FastAPI's {"detail": [...]}; JSON even where the route answers text.
                [schema] = [c["schema"] for c in response["content"].values()]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
    assert set(spec["components"]["schemas"]["ErrorOut"]["properties"]) == {"error", "errors"}
