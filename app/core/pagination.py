from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_PER_PAGE = 100


class PageParams(BaseModel):
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return self.page * self.per_page


def _page_params(
    page: Annotated[int, Query(ge=0, description="Page number, counting from 0")] = 0,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20,
) -> PageParams:
    return PageParams(page=page, per_page=per_page)


Pagination = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    data: list[T]
    total: int
    page: int
    per_page: int
