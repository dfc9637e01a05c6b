"""The DSR engine: plain Python that fulfils data-subject requests; Airflow only calls it.

Packages, top layer first (a package may import only the layers below it; the contracts
in ``pyproject.toml`` [tool.importlinter] are checked by ``make test``)::

    orchestration | cli      Airflow glue (DAG factory, operators, callbacks) | the ops CLI
    rights                   the steps of each right: intake, then access / portability, ...
    evidence | package | checks   regulator bundles | export packages | GX checks of results
    sla                      deadlines, extensions and pauses, status, compliance figures
    notify                   mail and the notices to subjects and ops
    connectors               one class per channel (database, object store, partner APIs)
    identity                 resolution of a subject across the identity graph
    ledger                   the request ledger: tables, hash chain, migrations
    connections              Airflow connections and Variables turned into clients
    core                     errors, data map, request model, identity normalisation

See docs/architecture.md.
"""
