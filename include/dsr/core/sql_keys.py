"""The indexed lookup keys of identity columns, as SQLAlchemy expressions both backends compile.

``email_key(col)`` is ``lower(trim(col, <every whitespace character>))`` (``btrim`` on
PostgreSQL) and ``phone_digits_key(col)`` is ``col`` with the punctuation people type between
digits removed (nested ``replace()`` on SQLite, one ``translate()`` on
PostgreSQL). The platform DB carries an expression index on exactly these for every
identity column (the demo schema creates them with the same constructs, so the index and the
query are the same expression), and lookups compare them with the candidate forms of
:mod:`include.dsr.core.identities`; the database never decides what "the same" means.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from include.dsr.core.identities import PHONE_PUNCTUATION, WHITESPACE


def _literal(text: str) -> str:
    """A SQL string literal rendered into the statement (an index matches a literal, not a bound parameter)."""
    return "'" + text.replace("'", "''") + "'"


class email_key(FunctionElement):
    """``lower(trim(col, WHITESPACE))``: the indexed form of an email column."""

    type = String()
    inherit_cache = True
    name = "email_key"


class phone_digits_key(FunctionElement):
    """``col`` without ``PHONE_PUNCTUATION``: the indexed form of a free-text phone column."""

    type = String()
    inherit_cache = True
    name = "phone_digits_key"


@compiles(email_key)
def _email_key_sqlite(element: email_key, compiler: Any, **kw: Any) -> str:
    return f"lower(trim({compiler.process(element.clauses, **kw)}, {_literal(WHITESPACE)}))"


@compiles(email_key, "postgresql")
def _email_key_postgresql(element: email_key, compiler: Any, **kw: Any) -> str:
    return f"lower(btrim({compiler.process(element.clauses, **kw)}, {_literal(WHITESPACE)}))"


@compiles(phone_digits_key)
def _phone_digits_key(element: phone_digits_key, compiler: Any, **kw: Any) -> str:
    sql = compiler.process(element.clauses, **kw)
    for char in PHONE_PUNCTUATION:
        sql = f"replace({sql}, {_literal(char)}, '')"
    return sql


@compiles(phone_digits_key, "postgresql")
def _phone_digits_key_postgresql(element: phone_digits_key, compiler: Any, **kw: Any) -> str:
    return f"translate({compiler.process(element.clauses, **kw)}, {_literal(PHONE_PUNCTUATION)}, '')"
