"""Alembic environment of the ledger: always run on a connection handed in by the ledger.

:func:`include.dsr.ledger.migrate.upgrade` opens the connection under the ledger's write
lock and passes it in ``config.attributes["connection"]``; there is no alembic.ini and no
offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from include.dsr.ledger.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
