"""Ice breakers through the SDK: kept in Meta's messenger profile, read back from it."""

import pytest
from postproxy import PostProxyError, ValidationError
from postproxy._types import IceBreaker

from app.ice_breakers.service import questions_of


async def test_set_read_and_delete_ice_breakers(account, clean):
    client = account.client
    assert (await client.profiles.ice_breakers(account.profile_id)).ice_breakers == []
    items = [
        IceBreaker(question="Where are you?", payload="IB_WHERE"),
        {"question": "Opening hours?", "payload": "IB_HOURS"},
    ]
    assert (await client.profiles.set_ice_breakers(account.profile_id, items)).success is True
    read = await client.profiles.ice_breakers(account.profile_id)
    assert [(i.question, i.payload) for i in read.ice_breakers] == [
        ("Where are you?", "IB_WHERE"),
        ("Opening hours?", "IB_HOURS"),
    ]
    assert (await client.profiles.delete_ice_breakers(account.profile_id)).success is True
    assert (await client.profiles.ice_breakers(account.profile_id)).ice_breakers == []


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "ice_breakers"),
        ([{"question": "q", "payload": "p"}] * 5, "ice_breakers"),
        ([{"question": "", "payload": "p"}], "ice_breakers.0.question"),
        ([{"question": "q", "payload": "p"}, {"question": "q"}], "ice_breakers.1.payload"),
    ],
)
async def test_ice_breakers_meta_would_refuse_are_422s(account, clean, items, field):
    with pytest.raises(ValidationError) as refused:
        await account.client.profiles.set_ice_breakers(account.profile_id, items)
    assert field in [e["field"] for e in refused.value.response["errors"]]
    assert (await account.client.profiles.ice_breakers(account.profile_id)).ice_breakers == []


async def test_ice_breakers_of_an_unknown_profile_are_404(account, clean):
    with pytest.raises(PostProxyError) as missing:
        await account.client.profiles.ice_breakers("nope")
    assert missing.value.status_code == 404


def test_both_of_metas_formats_are_read():
    flat = [{"question": "a", "payload": "1"}]
    locales = [
        {"locale": "en_GB", "call_to_actions": [{"question": "b", "payload": "2"}]},
        {"locale": "default", "call_to_actions": flat},
    ]
    for data in (flat, locales, [{"ice_breakers": flat}]):
        assert [(i.question, i.payload) for i in questions_of(data)] == [("a", "1")]
    assert questions_of(None) == []
