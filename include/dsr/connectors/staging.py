"""A request's working area in the object store: gathered frames live here, not in XCom.

Layout under ``s3://<exports bucket>/_staging/<request_id>/``::

    subjects.json                       resolved identities (personal data: never logged)
    systems/<unit>/_meta.json           counts per collection, staged files, status
    systems/<unit>/<collection>.json    the rows (pandas "split" JSON keeps empty frames' columns)

A unit is a partner system (``payflow``) or a collection group of an internal system
(``fabconnect_app.account``), i.e. what one gather task produced.
    files/<object key>                  copies of objects (CAD files, ...)
    checks/<system>.json                Great Expectations results

Everything is overwritten on a re-run, so retries never duplicate anything; the finished
package is written under ``<request_id>/`` and the staging area is cleared afterwards.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from include.dsr.connectors.base import ExportResult
from include.dsr.core.errors import TerminalError
from include.dsr.identity.resolver import ResolvedSubject

if TYPE_CHECKING:
    import pandas as pd


class Staging:
    """:param s3: boto3 S3 client  :param bucket: exports bucket  :param request_id: the request (or batch) id"""

    def __init__(self, s3: Any, bucket: str, request_id: str) -> None:
        self.s3, self.bucket, self.request_id = s3, bucket, request_id
        self.prefix = f"_staging/{request_id}/"

    @property
    def files_prefix(self) -> str:
        return f"{self.prefix}files/"

    # -- raw objects ---------------------------------------------------------------------
    def put_json(self, name: str, payload: Any) -> str:
        key = f"{self.prefix}{name}"
        self.s3.put_object(
            Bucket=self.bucket, Key=key, Body=json.dumps(payload, default=str).encode(), ContentType="application/json"
        )
        return key

    def get_json(self, name: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}")["Body"].read())

    def exists(self, name: str) -> bool:
        resp = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}{name}", MaxKeys=1)
        return resp.get("KeyCount", 0) > 0

    def keys(self, under: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}{under}"
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def clear(self) -> int:
        keys = self.keys()
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
        return len(keys)

    # -- subjects and results --------------------------------------------------------------
    def put_subjects(self, subjects: list[ResolvedSubject]) -> str:
        return self.put_json("subjects.json", [s.to_json() for s in subjects])

    def get_subjects(self) -> list[ResolvedSubject]:
        return [ResolvedSubject.from_json(raw) for raw in self.get_json("subjects.json")]

    def put_result(
        self, result: ExportResult, unit: str | None = None, status: str = "completed", detail: dict | None = None
    ) -> dict:
        """Stage every frame of ``result`` and its meta; returns the meta (counts, no personal data).

        :param unit: staging name; a system key for partners, ``<system>.<group>`` for the
            collection groups of an internal system (default: the system key)
        """
        unit = unit or result.system
        for collection, frame in result.frames.items():
            body = frame.to_json(orient="split", index=False, date_format="iso", force_ascii=False)
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{self.prefix}systems/{unit}/{collection}.json",
                Body=body.encode(),
                ContentType="application/json",
            )
        meta = {
            "unit": unit,
            "system": result.system,
            "status": status,
            "counts": result.counts(),
            "files": result.files,
            # What the source itself returned and counted (the checks compare it with the frames).
            "source": {
                "counts": result.source_counts,
                "columns": result.returned_columns,
                "collections": result.returned_collections,
                "answers": result.answer_counts,
                "referenced_keys": result.referenced_keys,
            },
            **(detail or {}),
        }
        self.put_json(f"systems/{unit}/_meta.json", meta)
        return meta

    def units(self) -> list[str]:
        """Staged units (``payflow``, ``fabconnect_app.account``, ...)."""
        return sorted(k.split("/")[-2] for k in self.keys("systems/") if k.endswith("/_meta.json"))

    systems = units  # the unit of a partner is its system key

    def meta(self, unit: str) -> dict:
        return self.get_json(f"systems/{unit}/_meta.json")

    def load(self, unit: str) -> ExportResult:
        meta = self.meta(unit)
        source = meta.get("source", {})
        result = ExportResult(
            meta["system"],
            files=meta.get("files", {}),
            source_counts=source.get("counts", {}),
            returned_columns=source.get("columns", {}),
            returned_collections=source.get("collections", []),
            answer_counts=source.get("answers", []),
            referenced_keys=source.get("referenced_keys", {}),
        )
        for collection in meta["counts"]:
            result.frames[collection] = self._frame(f"systems/{unit}/{collection}.json")
        return result

    def _frame(self, name: str) -> pd.DataFrame:
        import pandas as pd

        body = self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}")["Body"].read().decode()
        return pd.read_json(io.StringIO(body), orient="split", dtype=False, convert_dates=False)


class StagedBatch:
    """A wave's staging read once (each unit loaded a single time), then sliced per request:
    what :func:`include.dsr.package.build.build_package` reads for one request of the wave."""

    def __init__(self, staging: Staging, units: list[str] | None = None) -> None:
        from include.dsr.connectors.base import REQUEST_ID_COLUMN

        self.staging = staging
        self.units = staging.units() if units is None else units
        self.metas = {unit: staging.meta(unit) for unit in self.units}
        self.results = {unit: staging.load(unit) for unit in self.units}
        # unit -> collection -> request id -> its rows, grouped once (not filtered per request) and
        # without the request-id column: the grouping is what makes them that request's
        self.rows: dict[str, dict[str, dict[str, pd.DataFrame]]] = {}
        self.empty: dict[str, dict[str, pd.DataFrame]] = {}  # unit -> collection -> no rows, same columns
        for unit, result in self.results.items():
            self.rows[unit], self.empty[unit] = {}, {}
            for name, frame in result.frames.items():
                if REQUEST_ID_COLUMN in frame.columns:
                    rows = frame.drop(columns=[REQUEST_ID_COLUMN])
                    # a row with no request id (NaN) goes to nobody, not to a request named "nan"
                    groups = rows.groupby(frame[REQUEST_ID_COLUMN], dropna=True)
                    self.rows[unit][name] = {str(rid): part.reset_index(drop=True) for rid, part in groups}
                    self.empty[unit][name] = rows.iloc[0:0]

    def request_ids(self) -> set[str]:
        """Every request id some staged row is tagged with (a wave checks them against its own)."""
        return {rid for collections in self.rows.values() for groups in collections.values() for rid in groups}

    def slice(self, request_id: str) -> RequestSlice:
        return RequestSlice(self, request_id)


class RequestSlice:
    """One request's part of a :class:`StagedBatch`: the units that concern it (a partner only
    its recipients'), each frame cut to the rows tagged with its request id (that column dropped)."""

    def __init__(self, batch: StagedBatch, request_id: str) -> None:
        self.batch, self.request_id = batch, request_id
        self.files_prefix = batch.staging.files_prefix

    def systems(self) -> list[str]:
        return [
            u for u in self.batch.units if self.request_id in self.batch.metas[u].get("requests", [self.request_id])
        ]

    units = systems

    def meta(self, unit: str) -> dict:
        return self.batch.metas[unit]

    def load(self, unit: str) -> ExportResult:
        from dataclasses import replace

        result, grouped = self.batch.results[unit], self.batch.rows[unit]
        untagged = [name for name, frame in result.frames.items() if name not in grouped and len(frame)]
        if untagged:  # whose rows they are is unknown: none of them may go into anyone's package
            raise TerminalError(f"staged unit {unit}: rows of {untagged} carry no request id; a wave needs them tagged")
        empty = self.batch.empty[unit]
        frames = {
            name: grouped[name].get(self.request_id, empty[name]) if name in grouped else frame
            for name, frame in result.frames.items()
        }
        return replace(result, frames=frames)
