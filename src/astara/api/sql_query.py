"""Neutron collection queries in the database (§2): visibility, filters,
sorting and `limit`/`marker` pagination as one SQL statement, with what the
views need loaded eagerly, so a list costs a bounded number of statements
however many rows it returns.

The results are those of `query.run_query` over the caller's readable views
(the in-Python reference): a resource declares, per API attribute, the column
(or clause) that stands for it. A filter or sort key that has no SQL form
(a value computed in Python) makes the list take the reference path for
what is left, after the SQL filters have narrowed the rows.

Pagination is keyset pagination: the marker's own sort values bound the
page (`(k1, k2, id) > (v1, v2, marker)` in the sort order), with the id as
the tie-breaker, so a page costs the same on page 1 and on page 1,000.
"""

from __future__ import annotations

import gc
import json
import threading
import typing
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.orm.interfaces import ORMOption
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql import ColumnElement as Clause
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import cast
from sqlalchemy.sql.visitors import InternalTraversal

from astara.api.attributes import Resource
from astara.api.auth import Caller
from astara.api.query import TAG_FILTERS, Query, marker_not_found, page_links, run_query

# A filter given as a clause-builder: the converted values -> a WHERE clause.
FilterClause = Callable[[list[Any]], ColumnElement[bool]]


@dataclass(frozen=True)
class Listing:
    """How one resource's collection is listed in SQL.

    `statement(caller)`: the visible rows (a `select` of the model, with any
    joins visibility needs). `columns`: API attribute -> the column that
    holds it (filters use equality, `IN`, sorting orders by it). `filters`:
    API filter keys with a clause of their own (a list attribute: `subnets`,
    `fixed_ips.subnet_id`). `views(session, statement)`: the views of the
    rows `statement` (filtered, ordered, limited) selects, in its order, in a
    bounded number of statements (`orm_views` loads ORM rows with eager
    loading; a large collection may read plain rows instead).
    `listed(session, statement)`: the same views for the response alone
    (nothing reads them again but the encoder), so some of their values may
    be JSON text the database built (`orjson.Fragment`); `views` when not
    given. The reference path (a filter or sort in Python) reads `views`.
    """

    resource: Resource
    model: Any
    statement: Callable[[Caller], Select[Any]]
    views: Callable[[Session, Select[Any]], list[dict[str, Any]]]
    columns: Mapping[str, InstrumentedAttribute[Any]] = field(default_factory=dict)
    filters: Mapping[str, FilterClause] = field(default_factory=dict)
    listed: Callable[[Session, Select[Any]], list[dict[str, Any]]] | None = None
    # Run before a list, in its transaction, with the list's query and the
    # request's time (security groups: a project's first list makes its
    # default group).
    prepare: Callable[[Session, Caller, Query, datetime], None] | None = None


def run(
    session: Session, caller: Caller, listing: Listing, query: Query, url: str
) -> dict[str, Any]:
    """The collection body for `query` (as `query.run_query` would give it)."""
    resource = listing.resource
    dialect = session.get_bind().dialect.name
    statement = listing.statement(caller)
    hidden = {a.name for a in resource.attributes if a.admin_visible and not caller.is_admin}
    left: dict[str, list[Any]] = {}
    for key, wanted in query.filters.items():
        if key.partition(".")[0] in hidden:
            # What the caller may not read matches nothing (as its view lacks it).
            statement = statement.where(false())
            continue
        clause = _filter(listing, key, wanted, dialect)
        if clause is None:
            left[key] = wanted
        else:
            statement = statement.where(clause)
    sorts = list(query.sorts)
    if (sorts or query.limit) and not any(key == "id" for key, _ in sorts):
        sorts.append(("id", True))  # a total order: the id breaks ties
    if left or not all(key in listing.columns for key, _ in sorts):
        # The reference path over what SQL could narrow down.
        items = _readable(resource, listing.views(session, statement), caller)
        return run_query(resource, items, replace(query, filters=left, sorts=sorts), url)
    if query.limit and query.page_reverse:
        sorts = [(key, not ascending) for key, ascending in sorts]
    ordering = [(_sortable(listing.columns[key], dialect), ascending) for key, ascending in sorts]
    if query.limit and query.marker is not None:
        values = session.execute(
            statement.with_only_columns(*(column for column, _ in ordering)).where(
                listing.columns["id"] == query.marker
            )
        ).first()
        if values is None:
            raise marker_not_found(resource, query.marker)
        statement = statement.where(_after(ordering, list(values)))
    statement = statement.order_by(*(_order(column, ascending) for column, ascending in ordering))
    if query.limit:
        statement = statement.limit(query.limit)
    listed = listing.listed or listing.views
    found = _readable(resource, listed(session, statement), caller)
    if query.limit and query.page_reverse:
        found.reverse()
    body: dict[str, Any] = {resource.collection: found}
    if query.limit:
        body[f"{resource.collection}_links"] = page_links(found, query, url)
    return body


def orm_views(
    view: Callable[[Any], dict[str, Any]], *options: ORMOption
) -> Callable[[Session, Select[Any]], list[dict[str, Any]]]:
    """`Listing.views` for ORM rows: loaded with `options` (selectinload of
    what `view` reads), each shown by `view`."""

    def views(session: Session, statement: Select[Any]) -> list[dict[str, Any]]:
        return [view(row) for row in session.scalars(statement.options(*options)).unique()]

    return views


def streamed(
    connection: Connection, statement: ClauseElement, chunk: int = 1_000
) -> Generator[Any, None, None]:
    """The rows `statement` selects, as the driver's plain tuples (their
    values as PostgreSQL gives them), streamed in chunks of `chunk` rows
    (libpq's chunked rows mode): the database goes on producing rows while
    Python works on those that came, so that the two share a large list's
    time on two cores instead of taking turns. Nothing else may run on the
    connection until the rows are all read. PostgreSQL only.

    The statement is compiled as SQLAlchemy would execute it (its
    parameters through their types' processors) and announced to the
    engine's `before_cursor_execute` listeners, as any other statement."""
    compiled = typing.cast(
        SQLCompiler,
        statement.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True}),
    )
    processors = typing.cast(Mapping[str, Callable[[Any], Any]], compiled._bind_processors)
    parameters = {
        name: processors[name](value) if name in processors else value
        for name, value in (compiled.construct_params() or {}).items()
    }
    sql = compiled.string
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        connection.dispatch.before_cursor_execute(connection, cursor, sql, parameters, None, False)
        yield from cursor.stream(sql, parameters, size=chunk)
    finally:
        cursor.close()


def timestamp_text(column: Any) -> ColumnElement[str]:
    """`changes.timestamp` of a time column, in PostgreSQL itself (a string
    per row instead of a datetime object to make, then format)."""
    return func.to_char(column, literal('YYYY-MM-DD"T"HH24:MI:SS"Z"', String))


def tags_view(text: str | None) -> Any:
    """The standard `tags` from the column's JSON text: sorted, and most
    often `[]`, not decoded (one shared empty tuple: orjson writes it `[]`)."""
    return () if text is None or text == "[]" else sorted(json.loads(text))


_paused_lock = threading.Lock()
_paused = 0  # lists building their views now; the collector is off while any is


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a list's views are built: their
    tens of thousands of new dicts and lists would set off collections that walk the whole heap
    again and again (3-5 times the building's own cost). Nothing it builds
    is a cycle; reference counting frees it all the same. Several lists at
    once: the first disables the collector, the last one out enables it
    again (if it was enabled before the first)."""
    global _paused, _was_enabled
    with _paused_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


_was_enabled = True


def _readable(
    resource: Resource, items: list[dict[str, Any]], caller: Caller
) -> list[dict[str, Any]]:
    """`attributes.readable` of each item, the hidden names worked out once."""
    if caller.is_admin:
        return items
    hidden = [a.name for a in resource.attributes if a.admin_visible]
    for item in items:  # each a view of its own, made for this list
        for name in hidden:
            item.pop(name, None)
    return items


def _filter(
    listing: Listing, key: str, wanted: list[Any], dialect: str
) -> ColumnElement[bool] | None:
    """The WHERE clause for one filter, or None when it has no SQL form."""
    if key in listing.filters:
        return listing.filters[key](wanted)
    if key in TAG_FILTERS and "tags" in listing.columns:
        return _tags(listing.columns["tags"], key, wanted, dialect)
    if key == "changed_since" and "updated_at" in listing.columns:
        return listing.columns["updated_at"] >= _whole_second_at_or_after(max(wanted))
    column = listing.columns.get(key)
    if column is None:
        return None
    return column.in_(wanted)


def _whole_second_at_or_after(since: datetime) -> datetime:
    """Views show `updated_at` in whole seconds, and `changed_since` compares
    those: a truncated time is at or after `since` exactly when the stored
    one is at or after `since` rounded up to a whole second."""
    naive = since.astimezone(UTC).replace(tzinfo=None)
    whole = naive.replace(microsecond=0)
    return whole if whole == naive else whole + timedelta(seconds=1)


def _tags(
    column: InstrumentedAttribute[Any], key: str, wanted: list[Any], dialect: str
) -> ColumnElement[bool]:
    def has(tag: str) -> ColumnElement[bool]:
        if dialect == "postgresql":
            return cast(column, JSONB).contains([tag])
        element = func.json_each(column).table_valued("value")
        one: Select[Any] = select(literal_column("1")).select_from(element)
        return exists(one.where(element.c.value == tag))

    listed = sorted(set(wanted))
    every = and_(*(has(tag) for tag in listed))
    some = or_(*(has(tag) for tag in listed))
    return {
        "tags": every,
        "tags-any": some,
        "not-tags": not_(every),
        "not-tags-any": not_(some),
    }[key]


def _sortable(column: InstrumentedAttribute[Any], dialect: str) -> Clause[Any]:
    """Text orders by code point, as Python compares strings: PostgreSQL's
    default collation would not (SQLite's BINARY does, on UTF-8)."""
    if dialect == "postgresql" and isinstance(column.type, String):
        return column.collate("C")
    return column.expression


def _order(column: Clause[Any], ascending: bool) -> Clause[Any]:
    # Nulls first in ascending order, so last in descending (§2.3).
    return column.asc().nulls_first() if ascending else column.desc().nulls_last()


def _after(ordering: list[tuple[Clause[Any], bool]], values: list[Any]) -> ColumnElement[bool]:
    """Rows after the marker's `values` in `ordering` (a total order)."""
    alternatives = []
    for index, (column, ascending) in enumerate(ordering):
        same = [_equal(c, v) for (c, _), v in zip(ordering[:index], values[:index], strict=True)]
        alternatives.append(and_(*same, _beyond(column, ascending, values[index])))
    return or_(*alternatives)


def _equal(column: Clause[Any], value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _beyond(column: Clause[Any], ascending: bool, value: Any) -> ColumnElement[bool]:
    if ascending:  # nulls first
        return column.is_not(None) if value is None else column > _bound(column, value)
    if value is None:  # descending: nulls last, nothing comes after one
        return false()
    return or_(column < _bound(column, value), column.is_(None))


def _bound(column: Clause[Any], value: Any) -> Any:
    # A parameter, also for booleans (false < true in both databases).
    return literal(value, column.type)


STANDARD = ("id", "project_id", "description", "created_at", "updated_at", "revision_number")


def standard_columns(model: Any) -> dict[str, InstrumentedAttribute[Any]]:
    """The standard attributes' columns (§1.3); `tenant_id` is `project_id`."""
    columns = {name: getattr(model, name) for name in STANDARD}
    return {**columns, "tenant_id": model.project_id, "tags": model.tags}


class InSubquery(ColumnElement[bool]):
    """`column IN (subquery)`; on PostgreSQL `column = ANY(ARRAY(subquery))`,
    which an index serves inside an OR (a bitmap OR of two index scans): the
    IN form makes `a = x OR b IN (...)` a scan of the whole table."""

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's declaration)
        ("column", InternalTraversal.dp_clauseelement),
        ("subquery", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], subquery: Select[Any]) -> None:
        self.column = column
        self.subquery = subquery.scalar_subquery()


def in_subquery(column: Any, subquery: Select[Any]) -> ColumnElement[bool]:
    return InSubquery(column.expression if hasattr(column, "expression") else column, subquery)


@compiles(InSubquery)
def _in_subquery(element: InSubquery, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} IN {compiler.process(element.subquery, **kw)}"


@compiles(InSubquery, "postgresql")
def _any_array(element: InSubquery, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY(ARRAY{compiler.process(element.subquery, **kw)})"


def sql_text(value: str) -> Any:
    """A literal piece of JSON text, in SQL."""
    return literal(value, String)


def json_string(column: Any) -> Any:
    """`column` as a JSON string (`to_json` escapes as orjson does: no
    spaces, raw UTF-8, `\\u00XX` for control characters)."""
    return cast(func.to_json(column), String)


def json_array(entry: Any, order_by: Any, where: Any) -> Any:
    """A PostgreSQL scalar subquery: the JSON array (as text, `[]` when
    none) of `entry` (JSON text) over the rows `where` selects, in
    `order_by` order."""
    entries = func.string_agg(entry, aggregate_order_by(sql_text(","), order_by))
    return (
        select(func.coalesce(sql_text("[") + entries + sql_text("]"), sql_text("[]")))
        .where(where)
        .scalar_subquery()
    )
