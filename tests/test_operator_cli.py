"""The operator's commands: connecting profiles (tokens kept off the command line, no silent
move between groups) and listing and revoking API keys."""

from sqlalchemy import select

from app.core import ids
from app.profiles import service as profiles
from app.profiles.models import Profile, ProfileGroup
from tests.cli import dmrelay, dmrelay_process

ADD = ("profiles", "add", "--platform", "instagram", "--platform-id", "17841400000000777")
PIPED = (*ADD, "--access-token", "-")


async def _stored(stack) -> tuple[str, str]:
    """The profile's group name and its decrypted access token."""
    async with stack.sessionmaker() as session:
        profile, group = (
            await session.execute(
                select(Profile, ProfileGroup.name)
                .join(ProfileGroup, ProfileGroup.id == Profile.profile_group_id)
                .where(Profile.platform_id == "17841400000000777")
            )
        ).one()
    return group, profiles.access_token(profile.access_token_encrypted, stack.settings)


async def test_adding_a_profile_connected_in_another_group_is_refused_unless_moved(clean):
    first = await dmrelay(*PIPED, "--profile-group", "shop", "--json", stdin="token-one\n")
    assert first.json()["platform_id"] == "17841400000000777"

    # As an operator runs it: a process of its own, whose exit status says it failed.
    refused = await dmrelay_process(
        *PIPED, "--profile-group", "agency", "--json", stdin="token-two\n"
    )
    assert refused.code != 0
    assert "already connected in profile group 'shop'" in refused.stderr
    assert "--move" in refused.stderr
    assert refused.stdout == ""
    assert await _stored(clean) == ("shop", "token-one")  # nothing changed, token included

    # Reconnecting in its own group (a fresh token) needs no flag.
    again = await dmrelay(*PIPED, "--profile-group", "shop", "--json", stdin="token-three\n")
    assert again.json()["id"] == first.json()["id"]
    assert await _stored(clean) == ("shop", "token-three")

    moved = await dmrelay(
        *PIPED, "--profile-group", "agency", "--move", "--json", stdin="token-four\n"
    )
    assert moved.json()["id"] == first.json()["id"]
    assert await _stored(clean) == ("agency", "token-four")


async def test_the_access_token_is_read_from_stdin_or_the_environment(clean):
    from_stdin = await dmrelay(*ADD, "--access-token", "-", "--json", stdin="from-stdin\n")
    assert from_stdin.code == 0, from_stdin.stderr
    assert "warning" not in from_stdin.stderr
    assert await _stored(clean) == ("default", "from-stdin")

    from_env = await dmrelay(*ADD, "--json", env={"DMRELAY_ACCESS_TOKEN": "from-env"})
    assert from_env.code == 0, from_env.stderr
    assert "warning" not in from_env.stderr
    assert await _stored(clean) == ("default", "from-env")

    # A literal token still works, with a warning about where it ends up.
    literal = await dmrelay(*ADD, "--access-token", "on-the-line", "--json")
    assert literal.code == 0, literal.stderr
    assert "shell history" in literal.stderr
    assert await _stored(clean) == ("default", "on-the-line")


async def test_a_missing_or_empty_access_token_is_refused(clean):
    missing = await dmrelay(*ADD, env={"DMRELAY_ACCESS_TOKEN": ""})
    assert missing.code != 0
    assert "DMRELAY_ACCESS_TOKEN" in missing.stderr
    empty = await dmrelay(*ADD, "--access-token", "-", stdin="\n")
    assert empty.code != 0
    assert "empty" in empty.stderr
    async with clean.sessionmaker() as session:
        assert (await session.scalars(select(Profile))).all() == []


async def test_keys_list_shows_keys_but_never_their_tokens(clean):
    created = await dmrelay(
        "keys", "create", "--name", "shop-key", "--profile-group", "shop", "--json"
    )
    shop = created.json()
    wide = (await dmrelay("keys", "create", "--name", "wide-key", "--json")).json()

    listed = (await dmrelay("keys", "list", "--json")).json()
    assert [(k["id"], k["name"]) for k in listed] == [
        (shop["id"], "shop-key"),
        (wide["id"], "wide-key"),
    ]
    assert listed[0]["profile_group"] == "shop"
    assert listed[0]["profile_group_id"] == shop["profile_group_id"]
    assert listed[1]["profile_group"] is None
    assert all(k["created_at"] and k["revoked_at"] is None for k in listed)
    assert set(listed[0]) == {
        "id",
        "name",
        "profile_group_id",
        "profile_group",
        "created_at",
        "revoked_at",
    }

    table = await dmrelay("keys", "list")
    assert table.code == 0, table.stderr
    header = ["ID", "NAME", "PROFILE", "GROUP", "CREATED", "REVOKED"]
    assert table.stdout.splitlines()[0].split() == header
    assert shop["id"] in table.stdout and "wide-key" in table.stdout
    for output in (table.stdout, (await dmrelay("keys", "list", "--json")).stdout):
        assert shop["token"] not in output and wide["token"] not in output


async def test_keys_revoke_marks_the_key_once_and_refuses_unknown_ids(clean):
    key = (await dmrelay("keys", "create", "--name", "gone", "--json")).json()
    revoked = (await dmrelay("keys", "revoke", key["id"], "--json")).json()
    assert revoked["id"] == key["id"]
    assert revoked["revoked_at"] is not None

    # Revoking again keeps the first time.
    again = (await dmrelay("keys", "revoke", key["id"], "--json")).json()
    assert again["revoked_at"] == revoked["revoked_at"]
    (listed,) = (await dmrelay("keys", "list", "--json")).json()
    assert listed["revoked_at"] == revoked["revoked_at"]

    human = await dmrelay("keys", "revoke", key["id"])
    assert human.code == 0 and "revoked" in human.stdout

    for unknown in ("nope", ids.encode(ids.Kind.API_KEY, 999), ids.encode(ids.Kind.CHAT, 1)):
        refused = await dmrelay("keys", "revoke", unknown)
        assert refused.code != 0
        assert "no API key has the id" in refused.stderr
