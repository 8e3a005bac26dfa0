"""The accounts the scenarios use: profiles and an API key made with the CLI, chats via the API."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from app.core import ids
from bench.stack import Stack

FIRST_PLATFORM_ID = 17841400000000001
FIRST_PARTICIPANT = 1602510300000000
# Each `dmrelay profiles add` is a Python start-up; two at a time per core keeps it short.
CLI_PARALLELISM = 4


@dataclass(frozen=True)
class Chat:
    public_id: str
    serial: int
    profile: str

    @property
    def path(self) -> str:
        return f"/api/chats/{self.public_id}/messages"


@dataclass(frozen=True)
class Profile:
    public_id: str
    platform_id: str
    chats: list[Chat]


@dataclass(frozen=True)
class Fixtures:
    token: str
    # The first profile, with `chats_per_main` chats: accept, latency, one-profile runs.
    main: Profile
    # `spread` profiles (main included) with two chats each: the many-profiles runs.
    spread: list[Profile]
    # A profile of its own for the scale run's bulk-loaded chats.
    scale: Profile


def _add_profile(stack: Stack, index: int, name: str) -> dict:
    return stack.cli_json(
        "profiles", "add",
        "--platform", "instagram",
        "--platform-id", str(FIRST_PLATFORM_ID + index),
        "--access-token", f"bench-token-{index}",
        "--username", name,
    )  # fmt: skip


async def create(stack: Stack, spread: int, chats_per_main: int) -> Fixtures:
    with ThreadPoolExecutor(CLI_PARALLELISM) as pool:
        records = list(pool.map(lambda i: _add_profile(stack, i, f"bench{i}"), range(spread)))
        records.append(_add_profile(stack, spread, "bench_scale"))
    token = stack.cli_json("keys", "create", "--name", "bench")["token"]

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as api:
        profiles = []
        for index, record in enumerate(records[:spread]):
            count = chats_per_main if index == 0 else 2
            made = await _chats(api, record["id"], _participant(index, 0), count)
            profiles.append(Profile(record["id"], record["platform_id"], made))
    scale = Profile(records[-1]["id"], records[-1]["platform_id"], [])
    return Fixtures(token=token, main=profiles[0], spread=profiles, scale=scale)


async def spread_chats(stack: Stack, fixtures: Fixtures, per_profile: int) -> list[Chat]:
    """`per_profile` chats of each spread profile, made as needed (measure 10's runs at
    Meta's latency, where a worker's concurrency rather than its CPU sets its pace, need
    more chats than workers have connections: one chat sends one message at a time)."""
    headers = {"Authorization": f"Bearer {fixtures.token}"}
    picked: list[Chat] = []
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as api:
        for index, profile in enumerate(fixtures.spread):
            have = profile.chats[:per_profile]
            more = per_profile - len(have)
            picked += have
            if more > 0:
                first = _participant(index, len(profile.chats))
                made = await _chats(api, profile.public_id, first, more)
                profile.chats.extend(made)  # so that a second call finds them
                picked += made
    return picked


def _participant(profile_index: int, chat_index: int) -> int:
    """A customer's id, distinct per profile and chat."""
    return FIRST_PARTICIPANT + profile_index * 10_000 + chat_index


async def _chats(api: httpx.AsyncClient, profile_id: str, first: int, count: int) -> list[Chat]:
    made = []
    for participant in range(first, first + count):
        response = await api.post(
            f"/api/profiles/{profile_id}/chats", json={"participant_external_id": str(participant)}
        )
        response.raise_for_status()
        public_id = response.json()["id"]
        made.append(Chat(public_id, ids.decode(ids.Kind.CHAT, public_id), profile_id))
    return made
