from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Base

T = TypeVar("T")
M = TypeVar("M", bound=Base)

MAX_PER_PAGE = 100
# The row offset (page × per_page) must fit PostgreSQL's bigint. A page past the last row
# but within this bound is simply empty (with the total, so a client sees why).
MAX_PAGE = (2**63 - 1) // MAX_PER_PAGE


class PageParams(BaseModel):
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return self.page * self.per_page


def _page_params(
    page: Annotated[int, Query(ge=0, le=MAX_PAGE, description="Page number, counting from 0")] = 0,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20,
) -> PageParams:
    return PageParams(page=page, per_page=per_page)


Pagination = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    data: list[T]
    total: int
    page: int
    per_page: int

    @classmethod
    def of(cls, data: list[T], total: int, params: PageParams) -> "Page[T]":
        """The page `params` asked for: its items, and the total they are a page of."""
        return cls(data=data, total=total, page=params.page, per_page=params.per_page)


async def fetch_page(
    session: AsyncSession,
    model: type[M],
    conditions: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    page: PageParams,
    unfiltered_total: int | None,
) -> tuple[list[M], int]:
    """One page of `model` rows and the total they are a page of. `unfiltered_total` is a
    kept count to use instead of counting (None: the conditions filter, so count)."""
    total = unfiltered_total
    if total is None:
        total = await session.scalar(select(func.count()).select_from(model).where(*conditions))
    rows = await session.scalars(
        select(model)
        .where(*conditions)
        .order_by(*order_by)
        .offset(page.offset)
        .limit(page.per_page)
    )
    return list(rows), total or 0
