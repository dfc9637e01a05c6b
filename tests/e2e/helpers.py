"""Reading what a DSR run left behind: ground truth, the package, the ledger."""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache

from include import constants, settings
from include.demo.people import hard_case_people
from include.demo.world import WorldPaths
from include.dsr.connections import sqlalchemy_url
from include.dsr.ledger.api import Ledger

HARD = {p.key: p for p in hard_case_people()}
VERIFIED = {"method": "logged_in_session", "verified_at": "2026-11-20T10:00:00Z"}
# A session proves the account and its email; a phone in the request is used only when the
# verification covers it too (ops confirmed every identity).
VERIFIED_ALL = {"method": "ops_confirmed", "verified_at": "2026-11-20T10:00:00Z"}


def conf_for(person_key: str, request_id: str, with_phone: bool = False, **extra) -> dict:
    person = HARD[person_key]
    subject = {"email": person.email_variant or person.email}
    if with_phone:
        subject["phone"] = person.phone
    verification = VERIFIED_ALL if with_phone else VERIFIED
    return {"request_id": request_id, "subject": subject, "verification": verification, **extra}


@lru_cache(maxsize=1)
def email_conf(request_id: str, email: str) -> dict:
    """The conf of a verified request by email alone (an ordinary person of the world)."""
    return {"request_id": request_id, "subject": {"email": email}, "verification": VERIFIED}


def ledger() -> Ledger:
    return Ledger(sqlalchemy_url(constants.CONN_LEDGER))


def expected_rows(paths: WorldPaths, person_key: str, systems_excluded: tuple = ()) -> set[tuple[str, str, str]]:
    """(system, collection, row id) the exact-matching rules must return, objects excluded."""
    rows = sqlite3.connect(paths.ground_truth).execute(
        "SELECT system, collection, row_id FROM owned_rows WHERE person_key=? AND linkable=1 AND system != ?",
        (person_key, "fabconnect_s3"),
    )
    return {r for r in rows if r[0] not in systems_excluded}


def expected_objects(paths: WorldPaths, person_key: str) -> set[str]:
    rows = sqlite3.connect(paths.ground_truth).execute(
        "SELECT row_id FROM owned_rows WHERE person_key=? AND system='fabconnect_s3'", (person_key,)
    )
    return {r[0] for r in rows}


def package_file(s3, request_id: str, path: str) -> bytes:
    """A file of the request's package, read from its zip as the subject would (the demo's are not encrypted)."""
    from include.dsr.package.build import open_package

    with open_package(s3, constants.EXPORTS_BUCKET, request_id) as archive:
        return archive.read(path)


def package_data(s3, request_id: str) -> dict:
    return json.loads(package_file(s3, request_id, "data.json"))


def package_keys(s3, request_id: str) -> list[str]:
    resp = s3.list_objects_v2(Bucket=constants.EXPORTS_BUCKET, Prefix=f"{request_id}/")
    return sorted(o["Key"] for o in resp.get("Contents", []))


def gathered_rows(data: dict) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(system, collection, id) of every row in a package's data.json, and the object keys."""
    rows, objects = set(), set()
    for system, collections in data.items():
        for collection, records in collections.items():
            for record in records:
                if system == "fabconnect_s3":
                    objects.add(record["object_key"])
                else:
                    rows.add((system, collection, str(record["id"])))
    return rows, objects


def manual_partners() -> tuple[str, ...]:
    from include.dsr.core.data_map import load_data_map

    return tuple(p.key for p in load_data_map().partners() if p.channel == "manual")


def demo_dir_paths() -> WorldPaths:
    return WorldPaths(settings.DEMO_DIR)


def people_without_manual_partner(paths: WorldPaths) -> list[str]:
    """Hard cases none of whose data went to a manual partner (their runs need no human answer)."""
    manual = manual_partners()
    conn = sqlite3.connect(paths.ground_truth)
    with_manual = {
        key
        for (key,) in conn.execute(
            f"SELECT DISTINCT person_key FROM owned_rows WHERE system IN ({','.join('?' * len(manual))})", manual
        )
    }
    return [key for key in sorted(HARD) if key not in with_manual]


def customers_of_automated_partners(paths: WorldPaths, min_partners: int = 1) -> list[tuple[str, str, set[str]]]:
    """Ordinary customers (``P…``) whose data went to automated partners only, payflow among them,
    and to at least ``min_partners`` of them: (person key, email, those partners)."""
    from include.dsr.core.data_map import load_data_map

    partners = {s.key for s in load_data_map().partners() if s.channel != "manual"}
    manual = set(manual_partners())
    truth = sqlite3.connect(paths.ground_truth)
    found = []
    for key, email in truth.execute("SELECT person_key, email FROM people WHERE kind='customer' ORDER BY person_key"):
        systems = {s for (s,) in truth.execute("SELECT DISTINCT system FROM owned_rows WHERE person_key=?", (key,))}
        served = systems & partners
        if key.startswith("P") and not systems & manual and "payflow" in systems and len(served) >= min_partners:
            found.append((key, email, served))
    truth.close()
    return found


def upload_wave(s3, wave_id: str, lines: list) -> str:
    """Put a wave's JSON Lines file (dicts, or raw strings for broken lines) where a run reads it; returns its key."""
    key = f"_waves/{wave_id}.jsonl"
    body = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines) + "\n"
    s3.put_object(Bucket=constants.EXPORTS_BUCKET, Key=key, Body=body.encode())
    return key


def wave_report(s3, wave_id: str) -> dict:
    """The wave's report (line, request id, status, reason) as the run left it."""
    from include.dsr.rights.waves import report_key

    return json.loads(s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=report_key(wave_id))["Body"].read())
