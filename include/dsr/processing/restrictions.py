"""The restriction registry in the platform DB: whose data may, for a purpose, only be stored.

One row restricts one key of a subject (an account id, or the keyed hash of an email or phone)
for one purpose, or for every purpose (``*``: an Art. 18 restriction, under which only storage
continues). Three ways in, the same answer:

* SQL: the view ``dsr_restricted_accounts`` (``account_id``, ``purpose``) of what is in force;
  a job anti-joins on it (``purpose IN ('*', '<its purpose>')``);
* Python: :func:`restricted_accounts` (set-based, for jobs) and :func:`is_restricted` (one subject);
* Airflow: the Asset ``dsr_processing_restrictions`` (``include.dsr.orchestration.assets``),
  updated by every change, that downstream DAGs schedule on.

Rows are never deleted: a lift stamps ``lifted_at`` and the lifting request, so what was in force
when stays answerable. Writes are idempotent per request, basis, purpose and key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, or_, select, update

from include.dsr.core.pii import keyed_hash

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

ALL_PURPOSES = "*"
#: Why a row is there: an Art. 18 restriction, an upheld Art. 21 objection, a withdrawn consent.
RESTRICTION, OBJECTION, CONSENT_WITHDRAWN = "restriction", "objection", "consent_withdrawn"
BASES = (RESTRICTION, OBJECTION, CONSENT_WITHDRAWN)
KEY_TYPES = ("account_id", "email", "phone")
VIEW = "dsr_restricted_accounts"

metadata = MetaData()
restrictions = Table(
    "dsr_processing_restrictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("basis", String(32), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("account_id", BigInteger, nullable=True),  # Fabconnect's own id: jobs join on it
    Column("key_hash", String(64), nullable=True),  # HMAC of "<type>:<value>" for emails and phones
    Column("applied_at", DateTime, nullable=False),  # UTC wall time, as the platform stores times
    Column("lifted_at", DateTime, nullable=True),
    Column("lifted_by", String(128), nullable=True),
    Index("ix_dsr_restrictions_account", "account_id", "lifted_at"),
    Index("ix_dsr_restrictions_key_hash", "key_hash", "lifted_at"),
    Index("ix_dsr_restrictions_request", "request_id"),
)


@dataclass(frozen=True)
class Restriction:
    """One registry row; times are aware UTC."""

    request_id: str
    basis: str
    purpose: str
    key_type: str
    account_id: int | None
    key_hash: str | None
    applied_at: datetime
    lifted_at: datetime | None
    lifted_by: str | None = None


@dataclass(frozen=True)
class SubjectKeys:
    """A subject as the registry knows it: account ids and keyed hashes, never values."""

    account_ids: frozenset[int]
    hashes: frozenset[tuple[str, str]]  # (key type, keyed hash)

    @classmethod
    def of(
        cls, secret: str, account_ids: Iterable[int] = (), emails: Iterable[str] = (), phones: Iterable[str] = ()
    ) -> SubjectKeys:
        """Keys of normalised identities (emails NFC lower-case, phones E.164)."""
        hashes = {("email", key_hash("email", e, secret)) for e in emails}
        hashes |= {("phone", key_hash("phone", p, secret)) for p in phones}
        return cls(frozenset(int(a) for a in account_ids), frozenset(hashes))

    def __bool__(self) -> bool:
        return bool(self.account_ids or self.hashes)


def key_hash(key_type: str, value: str, secret: str) -> str:
    """The registry's keyed hash of one identity (the same as the ledger's subject keys)."""
    return keyed_hash(f"{key_type}:{value}", secret)


def _naive_utc(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def ensure_schema(engine: Engine) -> None:
    """Create the table and the view where they are missing (both backends).

    Nothing is executed when both exist, so jobs that call it on every run need no DDL rights
    and never race a ``CREATE OR REPLACE VIEW`` against readers of the view.
    """
    from sqlalchemy import inspect

    found = inspect(engine)
    if found.has_table(restrictions.name) and VIEW in found.get_view_names():
        return
    metadata.create_all(engine, checkfirst=True)
    body = (
        f"SELECT DISTINCT account_id, purpose FROM {restrictions.name} "
        "WHERE lifted_at IS NULL AND account_id IS NOT NULL"
    )
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"CREATE VIEW IF NOT EXISTS {VIEW} AS {body}")
        else:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('dsr_restricted_accounts'))")
            if VIEW not in inspect(conn).get_view_names():
                conn.exec_driver_sql(f"CREATE VIEW {VIEW} AS {body}")


def _key_clause(keys: SubjectKeys):
    clauses = []
    if keys.account_ids:
        clauses.append(restrictions.c.account_id.in_(sorted(keys.account_ids)))
    if keys.hashes:
        clauses.append(restrictions.c.key_hash.in_(sorted(h for _, h in keys.hashes)))
    return or_(*clauses) if clauses else None


def apply(
    conn: Connection,
    request_id: str,
    keys: SubjectKeys,
    basis: str,
    purposes: Iterable[str] = (ALL_PURPOSES,),
    now: datetime | None = None,
) -> int:
    """Restrict every key of a subject for ``purposes``, in the caller's transaction; returns
    the rows added (none when this request already restricted them: a re-run adds nothing)."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}")
    purposes = sorted(set(purposes))
    existing = {
        (r.purpose, r.key_type, r.account_id, r.key_hash)
        for r in conn.execute(
            select(restrictions).where(
                restrictions.c.request_id == request_id,
                restrictions.c.basis == basis,
                restrictions.c.lifted_at.is_(None),
            )
        )
    }
    at = _naive_utc(now)
    wanted = [(p, "account_id", a, None) for p in purposes for a in sorted(keys.account_ids)]
    wanted += [(p, kind, None, digest) for p in purposes for kind, digest in sorted(keys.hashes)]
    rows = [
        {
            "request_id": request_id,
            "basis": basis,
            "purpose": purpose,
            "key_type": kind,
            "account_id": account,
            "key_hash": digest,
            "applied_at": at,
        }
        for purpose, kind, account, digest in wanted
        if (purpose, kind, account, digest) not in existing
    ]
    if rows:
        conn.execute(restrictions.insert(), rows)
    return len(rows)


def lift(
    conn: Connection,
    keys: SubjectKeys,
    lifted_by: str,
    basis: str = RESTRICTION,
    now: datetime | None = None,
) -> list[str]:
    """End, in the caller's transaction, every request's restriction under ``basis`` that any of
    the subject's keys is in: all of that request's rows, also those keyed by identities the
    lift did not resolve (an email rectified since, a phone not given). Returns those requests."""
    requests = sorted({r.request_id for r in in_force(conn, keys, basis)})
    if requests:
        conn.execute(
            update(restrictions)
            .where(
                restrictions.c.request_id.in_(requests),
                restrictions.c.basis == basis,
                restrictions.c.lifted_at.is_(None),
            )
            .values(lifted_at=_naive_utc(now), lifted_by=lifted_by)
        )
    return requests


def in_force(engine_or_conn: Engine | Connection, keys: SubjectKeys, basis: str | None = None) -> list[Restriction]:
    """The rows in force for any of the subject's keys (of one basis, or all)."""
    where = _key_clause(keys)
    if where is None:
        return []
    query = select(restrictions).where(where, restrictions.c.lifted_at.is_(None)).order_by(restrictions.c.id)
    if basis is not None:
        query = query.where(restrictions.c.basis == basis)
    return [_row(r) for r in _rows(engine_or_conn, query)]


def of_request(engine_or_conn: Engine | Connection, request_id: str) -> list[Restriction]:
    """Every row a request added (in force or lifted)."""
    query = select(restrictions).where(restrictions.c.request_id == request_id).order_by(restrictions.c.id)
    return [_row(r) for r in _rows(engine_or_conn, query)]


def restricted_accounts(engine: Engine, purpose: str) -> set[int]:
    """Accounts whose data must not be used for ``purpose`` (restricted outright, or for it)."""
    query = (
        select(restrictions.c.account_id)
        .where(
            restrictions.c.lifted_at.is_(None),
            restrictions.c.account_id.is_not(None),
            restrictions.c.purpose.in_([ALL_PURPOSES, purpose]),
        )
        .distinct()
    )
    return {int(a) for (a,) in _rows(engine, query)}


def restricted_hashes(engine: Engine, purpose: str) -> set[str]:
    """Keyed hashes (emails, phones) that must not be used for ``purpose``: for data keyed by an
    identity rather than an account (a newsletter list of addresses)."""
    query = (
        select(restrictions.c.key_hash)
        .where(
            restrictions.c.lifted_at.is_(None),
            restrictions.c.key_hash.is_not(None),
            restrictions.c.purpose.in_([ALL_PURPOSES, purpose]),
        )
        .distinct()
    )
    return {h for (h,) in _rows(engine, query)}


def is_restricted(
    engine: Engine,
    secret: str,
    purpose: str,
    account_id: int | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> bool:
    """May this subject's data be used for ``purpose``? False means go ahead.

    :param secret: the key of the registry's hashes (the product's ``erasure_hash`` secret)
    :param email: normalised (NFC, lower-case); :param phone: E.164
    """
    keys = SubjectKeys.of(
        secret, [account_id] if account_id is not None else [], [email] if email else [], [phone] if phone else []
    )
    where = _key_clause(keys)
    if where is None:
        raise ValueError("is_restricted needs an account_id, an email or a phone")
    query = select(restrictions.c.id).where(
        where, restrictions.c.lifted_at.is_(None), restrictions.c.purpose.in_([ALL_PURPOSES, purpose])
    )
    return bool(list(_rows(engine, query.limit(1))))


def _rows(engine_or_conn, query):
    from sqlalchemy.engine import Connection

    if isinstance(engine_or_conn, Connection):
        return engine_or_conn.execute(query).all()
    with engine_or_conn.connect() as conn:
        return conn.execute(query).all()


def _row(r) -> Restriction:
    return Restriction(
        r.request_id,
        r.basis,
        r.purpose,
        r.key_type,
        r.account_id,
        r.key_hash,
        _aware(r.applied_at),
        _aware(r.lifted_at),
        r.lifted_by,
    )


def _aware(moment: datetime | None) -> datetime | None:
    """The platform stores UTC wall time; callers get aware UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
