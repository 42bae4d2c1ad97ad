"""Safe measure filters: a boolean expression over a source's columns, parsed and checked.

A measure's ``filter`` (``parameters/measures.yaml``) selects the records or rows of its source.
It is configuration text that ends up in DuckDB SQL, so it is never pasted in as written:
:func:`compile_filter` parses it with sqlglot as one DuckDB expression, walks the syntax tree and
allows only

* references to the source's own columns (unqualified),
* literals (strings, numbers, TRUE/FALSE/NULL),
* comparison, boolean and arithmetic operators, ``IN (list)``, ``BETWEEN``, ``LIKE``/``ILIKE``
  (with ``ESCAPE``), ``IS [NOT] NULL``, ``CASE``, casts to plain types,
* a small list of scalar functions (:data:`ALLOWED_FUNCTIONS`).

Everything else is refused with the reason: statement separators, comments, subqueries, table
functions (``read_text``, ``read_csv``, ...), any other function, parameters, ``PRAGMA``, ``COPY``,
``ATTACH``, ``SET``, control or invisible Unicode characters, non-ASCII text outside string
literals, very long or deeply nested input. The SQL returned is regenerated from the checked tree
(never the user's text) and re-parsed to the same tree.

:func:`lock_down` turns off DuckDB's access to files and the network on a connection once the
sources are attached, so that even an expression that slipped through could not read or write
files.

Examples
--------
>>> compile_filter("knife_flag AND ho_offence_code IN ('1', '2')", ["knife_flag", "ho_offence_code"],
...                where="measure 'knife_crime'")
"knife_flag AND ho_offence_code IN ('1', '2')"
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from sveval.data import views
from sveval.errors import DataError, SpecError, SvevalError

#: longest filter accepted (characters)
MAX_FILTER_CHARS = 4000
#: deepest syntax tree accepted
MAX_DEPTH = 64
#: longest excerpt of a refused expression shown in a message
SHOWN_CHARS = 120

#: operators and structure allowed in a filter
_STRUCTURE: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren,
    exp.And, exp.Or, exp.Not,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.Escape,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.DPipe,
    exp.Case, exp.If, exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam,
)

#: scalar functions allowed in a filter: the sqlglot node and the name a user writes
ALLOWED_FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Lower: "lower", exp.Upper: "upper", exp.Trim: "trim", exp.Coalesce: "coalesce",
    exp.Substring: "substr", exp.Length: "length", exp.Abs: "abs", exp.Round: "round",
    exp.Floor: "floor", exp.Ceil: "ceil", exp.Greatest: "greatest", exp.Least: "least",
    exp.Nullif: "nullif", exp.StartsWith: "starts_with", exp.StrPosition: "strpos",
    exp.Concat: "concat", exp.Year: "year", exp.Quarter: "quarter", exp.Month: "month",
    exp.DayOfMonth: "day", exp.DayOfWeek: "dayofweek", exp.Hour: "hour", exp.Minute: "minute",
}

#: types a filter may cast to
ALLOWED_TYPES = frozenset({
    exp.DataType.Type.BOOLEAN, exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT,
    exp.DataType.Type.INT, exp.DataType.Type.BIGINT, exp.DataType.Type.FLOAT,
    exp.DataType.Type.DOUBLE, exp.DataType.Type.DECIMAL, exp.DataType.Type.VARCHAR,
    exp.DataType.Type.TEXT, exp.DataType.Type.CHAR, exp.DataType.Type.DATE,
    exp.DataType.Type.TIMESTAMP,
})

_STATEMENT_WORDS = {TokenType.SELECT, TokenType.COPY, TokenType.PRAGMA, TokenType.SET,
                    TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE, TokenType.CREATE,
                    TokenType.DROP, TokenType.ALTER, TokenType.WITH, TokenType.FROM,
                    TokenType.INTO, TokenType.USE, TokenType.EXECUTE}


class FilterError(SpecError, DataError):
    """A measure's filter was refused.

    Both a :class:`~sveval.errors.SpecError` (refused at validation, exit code 2) and a
    :class:`~sveval.errors.DataError` (refused at ingestion).

    Attributes
    ----------
    where : what the filter belongs to (e.g. ``measure 'knife_crime'``)
    expression : the refused expression, shortened for display
    reason : why it was refused
    """

    def __init__(self, where: str, expression: str, reason: str):
        self.where = where
        self.expression = shorten(expression)
        self.reason = reason
        # SpecError and DataError fields, so either kind of handler can read them
        self.path = None
        self.problems = [(f"{where} filter", self.expression, reason)]
        self.row = None
        self.column = None
        self.message = f"{where}: filter {self.expression!r} refused: {reason}"
        SvevalError.__init__(self, self.message)


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters with the number of characters left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _check_characters(expr: str, fail) -> None:
    for i, ch in enumerate(expr):
        if ch in "\t\n\r":
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "C" or cat in ("Zl", "Zp"):
            fail(f"character {i + 1} is an invisible or control character "
                 f"(U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}); only printable text is allowed")


def _depth(node: exp.Expression, limit: int) -> int:
    stack = [(node, 1)]
    deepest = 0
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((c, d + 1) for c in n.iter_expressions())
    return deepest


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return type(node).__name__


def _check_node(node: exp.Expression, known: dict[str, str] | None, fail) -> None:
    if isinstance(node, exp.Column):
        if node.table or node.args.get("db") or node.args.get("catalog"):
            fail(f"column {node.sql(dialect='duckdb')!r} is qualified; use the bare column name")
        if isinstance(node.this, exp.Star):
            fail("'*' is not a column")
        name = node.name
        if known is not None and name.lower() not in known:
            allowed = ", ".join(sorted(known.values()))
            fail(f"unknown column '{name}'; this source's columns are: {allowed}")
        return
    if isinstance(node, exp.Identifier):
        if not isinstance(node.parent, exp.Column):
            fail(f"unexpected name '{node.name}'")
        return
    if isinstance(node, exp.In):
        for key in ("query", "unnest", "field"):
            if node.args.get(key) is not None:
                fail("IN takes a list of values, not a subquery or a table")
        return
    if isinstance(node, exp.DataType):
        if node.this not in ALLOWED_TYPES:
            fail(f"cast to {node.sql(dialect='duckdb')} is not allowed; cast to a number, text, "
                 "boolean, date or timestamp")
        return
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null | exp.DataTypeParam):
        return
    if type(node) in ALLOWED_FUNCTIONS:
        return
    if isinstance(node, _STRUCTURE):
        return
    if isinstance(node, exp.Subquery | exp.Select | exp.Query):
        fail("subqueries are not allowed")
    if isinstance(node, exp.Placeholder):
        fail("parameters ('?', '$1') are not allowed")
    if isinstance(node, exp.Func):
        allowed = ", ".join(sorted(ALLOWED_FUNCTIONS.values()))
        fail(f"function '{_function_name(node)}' is not allowed (no table functions, no file or "
             f"system access); allowed functions: {allowed}")
    fail(f"'{shorten(node.sql(dialect='duckdb'), 60)}' ({type(node).__name__}) is not allowed in a "
         "filter; use columns, literals, comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, IS NULL, CASE")


def compile_filter(expr: str, columns: Collection[str] | None, *, where: str) -> str:
    """Check a filter expression and return DuckDB SQL regenerated from its syntax tree.

    Parameters
    ----------
    expr : the filter as written in ``measures.yaml``
    columns : the columns of the measure's source (matched case-insensitively, as DuckDB does);
        None when they are not known yet (a file not read): everything but the column names is
        checked, and ingestion checks again with the file's columns
    where : what the filter belongs to, for messages (e.g. ``"measure 'knife_crime'"``)

    Returns
    -------
    str
        A DuckDB boolean expression equivalent to ``expr``, safe to put in a ``WHERE`` clause.

    Raises
    ------
    FilterError
        With ``where``, the (shortened) expression and the reason.
    """

    def fail(reason: str):
        raise FilterError(where, str(expr), reason)

    if not isinstance(expr, str):
        fail(f"a filter is text, got {type(expr).__name__}")
    if not expr.strip():
        fail("the filter is empty; leave 'filter' out to keep every record")
    if len(expr) > MAX_FILTER_CHARS:
        fail(f"{len(expr)} characters; a filter has at most {MAX_FILTER_CHARS}")
    _check_characters(expr, fail)
    try:
        tokens = sqlglot.tokenize(expr, read="duckdb")
    except SqlglotError as exc:
        fail(f"cannot be read as an expression: {shorten(str(exc).splitlines()[0], 200)}")
    for tok in tokens:
        if tok.comments:
            fail("comments ('--', '/* */') are not allowed in a filter")
        if tok.token_type == TokenType.SEMICOLON:
            fail("';' (a statement separator) is not allowed; a filter is one expression")
        if tok.token_type in _STATEMENT_WORDS:
            fail(f"'{tok.text}' starts a statement or query; a filter is one boolean expression")
        if tok.token_type not in (TokenType.STRING, TokenType.NATIONAL_STRING) and not tok.text.isascii():
            fail(f"non-ASCII text {tok.text!r} outside a quoted string")
        if tok.token_type in (TokenType.RAW_STRING, TokenType.BYTE_STRING, TokenType.HEREDOC_STRING,
                              TokenType.HEX_STRING, TokenType.BIT_STRING, TokenType.UNICODE_STRING):
            fail(f"{tok.text!r}: only plain single-quoted strings are allowed")
    try:
        trees = sqlglot.parse(expr, read="duckdb")
    except SqlglotError as exc:
        fail(f"not a valid expression: {shorten(str(exc).splitlines()[0], 200)}")
    except RecursionError:
        fail("nested too deeply")
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        fail("a filter is exactly one expression")
    tree = trees[0]
    if _depth(tree, MAX_DEPTH) > MAX_DEPTH:
        fail(f"nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(tree, exp.Alias):
        fail("aliases ('AS') are not allowed; a filter is one boolean expression")
    known = None if columns is None else {str(c).lower(): str(c) for c in columns}
    for node in tree.walk():
        _check_node(node, known, fail)
    sql = tree.sql(dialect="duckdb", comments=False)
    # the regenerated text must read back as the very tree that was checked
    again = sqlglot.parse(sql, read="duckdb")
    if len(again) != 1 or again[0] != tree:
        fail("the expression does not survive a round trip through the parser; simplify it")
    return sql


def lock_down(con: Any) -> None:
    """Turn off file and network access on a DuckDB connection, and freeze its settings.

    Call it once the sources are attached (read into tables): afterwards no query on ``con`` can
    read or write files (``read_text``, ``read_csv``, ``COPY ... TO``, ``ATTACH``) and no setting
    can be changed back.
    """
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


# ------------------------------------------------------------------------------------------------
# The columns a measure's filter may use, and the check of every measure in a catalogue
# ------------------------------------------------------------------------------------------------
_POLICE_UK_VIEW = ("crime_id", "month", "reported_by", "falls_within", "longitude", "latitude",
                   "location", "lsoa_code", "lsoa_name", "crime_type", "last_outcome_category",
                   "context", "area_code", "period")


def source_columns(source: str) -> frozenset[str]:
    """Columns of a built-in source's view in :mod:`sveval.data.ingest` (what a filter may use)."""
    if source == "force_extract":
        cols = (*views.FORCE_EXTRACT_COLUMNS, "period")
    elif source == "police_uk":
        cols = _POLICE_UK_VIEW
    elif source == "aggregate":
        cols = ("period", "area_code", "measure", "n")
    elif source in views.AGGREGATE_FILES:
        cols = (*views.AGGREGATE_FILES[source][1], "n", "period")
    else:
        raise DataError(f"unknown source '{source}'")
    return frozenset(cols)


def _columns_for(source: str, kinds: dict[str, str] | None) -> frozenset[str] | None:
    """Columns a filter on ``source`` may use; None when only the file will tell (records, tables)."""
    if kinds is not None and source in kinds:
        return frozenset(_POLICE_UK_VIEW) if kinds[source] == "police_uk" else None
    try:
        return source_columns(source)
    except DataError:
        return None


def check_measure_filters(catalog: Any) -> dict[str, str]:
    """Compile every measure's filter in a catalogue; refuse all bad ones at once.

    Parameters
    ----------
    catalog : a :class:`sveval.catalog.Catalog`

    Returns
    -------
    dict
        measure id -> compiled SQL (measures with a filter only).

    Raises
    ------
    SpecError
        Naming ``measures.yaml``, the field ``measures.<k>.filter``, the measure, the expression and
        the reason, for every refused filter.
    """
    out: dict[str, str] = {}
    problems = []
    kinds = catalog.source_kinds() if hasattr(catalog, "source_kinds") else None
    for k, m in enumerate(catalog.measures.values()):
        if m.filter is None:
            continue
        try:
            out[m.id] = compile_filter(m.filter, _columns_for(m.source, kinds), where=f"measure '{m.id}'")
        except FilterError as exc:
            problems.append((f"measures.{k}.filter", exc.expression, f"measure '{m.id}': {exc.reason}"))
    if problems:
        raise SpecError(catalog.parameters_dir / "measures.yaml", problems)
    return out
