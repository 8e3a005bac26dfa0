"""Many rows as one bound parameter per column: a statement's text, and so its prepared
plan, stays the same however many rows it carries."""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.expression import BindParameter, TableValuedAlias
from sqlalchemy.types import JSON, TypeEngine


def array(values: list[Any], type_: TypeEngine[Any]) -> BindParameter[Sequence[Any]]:
    """A one-dimensional array parameter (even of JSON lists); a JSON None is NULL."""
    if isinstance(type_, JSON):
        type_ = JSONB(none_as_null=True)
    return bindparam(None, values, type_=ARRAY(type_, dimensions=1))


def rows_table(
    rows: list[dict[str, Any]], types: Mapping[str, TypeEngine[Any]]
) -> TableValuedAlias:
    """Rows as a FROM clause, an array per column unnested together: the statement's text is
    the same however many rows there are, so PostgreSQL prepares it once per connection. A
    key a row lacks is NULL (as a column an INSERT leaves out)."""
    arrays = [array([row.get(name) for row in rows], type_) for name, type_ in types.items()]
    return func.unnest(*arrays).table_valued(*types).render_derived()
