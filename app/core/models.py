from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Identity, func
from sqlalchemy.orm import Mapped, mapped_column


class SerialId:
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def sql_values(values: Iterable[StrEnum]) -> str:
    """`('a', 'b')`: enum values as an SQL list, for constraints, partial indexes and raw SQL."""
    return "(" + ", ".join(f"'{value.value}'" for value in values) + ")"


def one_of(column: str, values: Iterable[StrEnum], name: str | None = None) -> CheckConstraint:
    """The CHECK constraint that keeps `column` to an enum's values: generated from the enum,
    so that the two cannot drift (tests/test_enums.py compares them with the database)."""
    return CheckConstraint(f"{column} IN {sql_values(values)}", name=name or column)
