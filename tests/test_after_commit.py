"""After-commit actions run once the unit of work commits, and only for what it wrote."""

import contextlib

from app.core.db import after_commit, session_scope
from tests.conftest import Stack


class Boom(Exception):
    pass


async def test_actions_of_a_rolled_back_savepoint_are_dropped(clean: Stack):
    ran: list[str] = []

    def action(name: str):
        async def run(pool) -> None:
            ran.append(name)

        return run

    scope = session_scope(clean.sessionmaker, clean.worker.pool)
    session = await anext(scope)
    after_commit(session, action("outer"))
    with contextlib.suppress(Boom):
        async with session.begin_nested():
            after_commit(session, action("rolled back"))
            raise Boom
    async with session.begin_nested():
        after_commit(session, action("released"))
        with contextlib.suppress(Boom):
            async with session.begin_nested():
                after_commit(session, action("inner rolled back"))
                raise Boom
    with contextlib.suppress(Boom):
        async with session.begin_nested():
            async with session.begin_nested():
                after_commit(session, action("released, then its savepoint rolled back"))
            raise Boom
    after_commit(session, action("after"))
    with contextlib.suppress(StopAsyncIteration):
        await anext(scope)  # commits, then runs the actions

    assert ran == ["outer", "released", "after"]


async def test_no_action_runs_when_the_unit_of_work_rolls_back(clean: Stack):
    ran: list[str] = []

    async def run(pool) -> None:
        ran.append("ran")

    scope = session_scope(clean.sessionmaker, clean.worker.pool)
    session = await anext(scope)
    after_commit(session, run)
    with contextlib.suppress(Boom):
        await scope.athrow(Boom)
    assert ran == []
