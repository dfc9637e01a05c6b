"""The data map: every system, collection and field the DSR engine knows, validated on load.

Nesting is system -> collection -> field (after fideslang). A field carries its data
categories, whether it is an identity, references to other collections and, for erasure,
what happens to it. Collections carry purpose, legal basis, retention, portability scope
and the group they are gathered in. Validation errors name the offending key and say
how to fix it; ``load_data_map`` raises ``DataMapError``.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from include.dsr.core.errors import DataMapError

Identity = Literal["email", "phone", "account_id", "email_hash"]
Family = Literal["internal", "payment_partner", "manufacturing_partner"]
Channel = Literal["database", "object_store", "api", "s3_dropbox", "manual"]
FieldErasure = Literal["delete_row", "null", "hash", "keep"]
Portability = Literal["provided", "observed", "inferred", "none"]
PhoneFormat = Literal["e164", "free_text"]
#: How a corrected value is validated (``include.dsr.core.corrections``).
RectifyFormat = Literal["email", "phone", "name", "text", "country", "postal_code"]
NOT_PERSONAL = "system.operations"
DURATION_PATTERN = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reference(_Strict):
    collection: str = Field(description="Collection in the same system that this field points to.")
    field: str = Field(description="Field of that collection (usually its primary key).")


class FieldSpec(_Strict):
    name: str = Field(description="Column / attribute name as stored in the system.")
    data_categories: list[str] = Field(description=f"Taxonomy keys; ['{NOT_PERSONAL}'] marks a non-personal field.")
    identity: Identity | None = Field(None, description="This field identifies the subject directly.")
    primary_key: bool = Field(False, description="Row identifier used for evidence and erasure.")
    references: list[Reference] = Field(default_factory=list, description="Edges of the identity graph.")
    erasure: FieldErasure | None = Field(None, description="Override of the collection's erasure for this field.")
    phone_format: PhoneFormat | None = Field(
        None,
        description="How a phone identity column stores numbers: 'e164' (normalised, +4915123456789; the "
        "default) or 'free_text' (as people typed them: national, spaced, punctuated).",
    )
    phone_region: str | None = Field(
        None,
        description="Region (ISO 3166, e.g. DE) a number stored without country code is read in; "
        "default the controller's country.",
    )
    rectify: RectifyFormat | None = Field(
        None,
        description="The subject may correct this field (Art. 16); the corrected value is validated as this format.",
    )

    @property
    def personal(self) -> bool:
        return self.data_categories != [NOT_PERSONAL]

    @model_validator(mode="after")
    def _phone_settings_on_phones_only(self) -> FieldSpec:
        if (self.phone_format or self.phone_region) and self.identity != "phone":
            raise ValueError(f"field {self.name!r}: phone_format / phone_region apply to 'identity: phone' fields only")
        if self.phone_region and not re.fullmatch(r"[A-Z]{2}", self.phone_region):
            raise ValueError(
                f"field {self.name!r}: phone_region {self.phone_region!r} must be an ISO 3166 code like DE"
            )
        return self


class SharedWith(_Strict):
    """Rows of this collection were sent to the partner system named by a field's value."""

    field: str = Field(description="Field whose value names the recipient system (or a key to look it up).")
    lookup: str | None = Field(
        None,
        description="'collection.field' turning the value into a system key, "
        "e.g. manufacturing_partners.slug for a partner id.",
    )


class Retention(_Strict):
    period: str = Field(description="ISO-8601 duration, e.g. P10Y, P6M, P30D.")
    trigger: str = Field(description="Event the period runs from, e.g. 'issued_at' or 'account closure'.")
    basis: str = Field(description="Why this long: the law or the purpose.")
    legal_hold: bool = Field(False, description="A legal obligation forbids erasure before the period ends.")
    timestamp_field: str | None = Field(None, description="Field holding the trigger date, for retention runs.")
    action: Literal["delete", "anonymise"] = Field(
        "delete",
        description="What the retention run does to an expired row: delete it, or anonymise it (its personal "
        "fields emptied or replaced by keyed hashes, per the fields' erasure strategy).",
    )
    only_when: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="The rule applies to rows whose fields hold these values only (a ticket once closed).",
    )

    @field_validator("period")
    @classmethod
    def _iso_duration(cls, value: str) -> str:
        if not DURATION_PATTERN.match(value) or value == "P":
            raise ValueError(f"period {value!r} is not an ISO-8601 duration like P10Y, P18M or P30D")
        return value

    @property
    def days(self) -> int:
        match = DURATION_PATTERN.match(self.period)
        assert match is not None  # checked by _iso_duration on load
        years, months, days = (int(g or 0) for g in match.groups())
        return years * 365 + months * 30 + days


class Collection(_Strict):
    name: str
    description: str
    personal: bool = Field(True, description="False for reference data holding no personal data at all.")
    group: str | None = Field(None, description="Gathering unit: collections of one group share a task.")
    purposes: list[str] = Field(default_factory=list, description="Keys of the top-level 'purposes'.")
    source: Literal["data_subject", "observed", "derived", "fabconnect"] = "data_subject"
    portability: Portability = "none"
    retention: Retention | None = None
    erasure: FieldErasure = Field("delete_row", description="What erasure does to a row by default.")
    object_key_field: str | None = Field(None, description="For object stores: 'collection.field' holding keys.")
    shared_with: SharedWith | None = Field(None, description="Which partner received each row (Art. 19 recipients).")
    fields: list[FieldSpec] = Field(default_factory=list)

    @cached_property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def primary_key(self) -> str:
        return next((f.name for f in self.fields if f.primary_key), "id")

    @property
    def identities(self) -> dict[str, str]:
        """identity type -> field name."""
        return {f.identity: f.name for f in self.fields if f.identity}

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


class Recipient(_Strict):
    legal_name: str
    role: str = Field(description="What they do with the data, as told to the subject (Art. 15(1)(c)).")
    country: str
    transfer_safeguard: str = Field("EEA: no transfer safeguard needed", description="Art. 15(2) safeguard.")


class System(_Strict):
    key: str = Field(description="Stable id used in the ledger and as partner slug.")
    name: str
    family: Family
    channel: Channel
    connection_id: str = Field(description="Airflow connection holding the system's endpoint and secrets.")
    recipient: Recipient | None = Field(None, description="Required for partners: named recipient (C-154/21).")
    channel_config: dict[str, str] = Field(default_factory=dict, description="Channel settings, no secrets.")
    collections: list[Collection]

    @model_validator(mode="after")
    def _partner_needs_recipient(self) -> System:
        if self.family != "internal" and self.recipient is None:
            raise ValueError(f"system {self.key!r} is a partner: add a 'recipient' block naming the company")
        if self.family != "internal" and self.channel not in ("api", "s3_dropbox", "manual"):
            raise ValueError(f"system {self.key!r}: partner channel must be one of api, s3_dropbox, manual")
        return self

    def collection(self, name: str) -> Collection:
        for c in self.collections:
            if c.name == name:
                return c
        raise KeyError(f"{self.key}.{name}")


class Purpose(_Strict):
    description: str
    legal_basis: Literal["consent", "contract", "legal_obligation", "legitimate_interest"]
    basis_detail: str = Field(description="Article reference and, for legitimate interest, the interest.")
    direct_marketing: bool = Field(
        False, description="Direct marketing: an objection to it is absolute and immediate (Art. 21(2), (3))."
    )
    stops_with: dict[str, dict[str, object]] = Field(
        default_factory=dict,
        description="What stopping this purpose for a subject sets, per collection of the platform DB: "
        "{collection: {field: value}} (consent off, testimonial unpublished).",
    )


class Controller(_Strict):
    name: str
    address: str
    privacy_contact: str
    supervisory_authority: str
    automated_decisions: str = Field(description="Art. 15(1)(h) statement.")


class DataMap(_Strict):
    version: Literal[1]
    controller: Controller
    data_categories: dict[str, str] = Field(description="Taxonomy key -> human description.")
    purposes: dict[str, Purpose]
    systems: list[System]

    @model_validator(mode="after")
    def _cross_references(self) -> DataMap:
        keys = [s.key for s in self.systems]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate system keys in {keys}")
        internal_fields = {
            f"{c.name}.{f.name}"
            for s in self.systems
            if s.family == "internal"
            for c in s.collections
            for f in c.fields
        }
        for system in self.systems:
            names = {c.name: c for c in system.collections}
            for coll in system.collections:
                where = f"systems[{system.key}].collections[{coll.name}]"
                self._check_collection(where, coll, names)
                if coll.shared_with:
                    self._check_shared_with(where, coll, names)
                if coll.object_key_field and coll.object_key_field not in internal_fields:
                    raise ValueError(
                        f"{where}.object_key_field: {coll.object_key_field!r} is not a "
                        "'collection.field' of an internal system"
                    )
                if system.family != "internal" and any(f.rectify for f in coll.fields):
                    raise ValueError(f"{where}: rectify marks fields Fabconnect stores; partners are told (Art. 19)")
        for key, purpose in self.purposes.items():
            for coll_name, values in purpose.stops_with.items():
                unknown = [f"{coll_name}.{name}" for name in values if f"{coll_name}.{name}" not in internal_fields]
                if unknown:
                    raise ValueError(f"purposes[{key}].stops_with: {unknown} are not fields of an internal system")
        return self

    def _check_shared_with(self, where: str, coll: Collection, names: dict[str, Collection]) -> None:
        shared = coll.shared_with
        if shared is None:
            return
        if shared.field not in coll.field_names:
            raise ValueError(f"{where}.shared_with.field: {shared.field!r} is not a field of {coll.name}")
        if shared.lookup:
            table, _, column = shared.lookup.partition(".")
            if table not in names or column not in names[table].field_names:
                raise ValueError(f"{where}.shared_with.lookup: {shared.lookup!r} does not exist in this system")

    def _check_collection(self, where: str, coll: Collection, names: dict[str, Collection]) -> None:
        for purpose in coll.purposes:
            if purpose not in self.purposes:
                raise ValueError(f"{where}.purposes: unknown purpose {purpose!r}; valid: {sorted(self.purposes)}")
        if coll.personal and not coll.purposes:
            raise ValueError(f"{where}: a personal collection needs at least one purpose")
        if coll.personal and coll.retention is None:
            raise ValueError(f"{where}: a personal collection needs a 'retention' block")
        if coll.retention and coll.retention.timestamp_field:
            missing = [
                f for f in [coll.retention.timestamp_field, *coll.retention.only_when] if f not in coll.field_names
            ]
            if missing:
                raise ValueError(f"{where}.retention: {missing} are not fields of {coll.name}")
        held = bool(coll.retention and coll.retention.legal_hold)
        if coll.erasure == "keep" and not held:
            raise ValueError(
                f"{where}.erasure: 'keep' needs retention.legal_hold: true (only a legal "
                "obligation justifies keeping data)"
            )
        for f in coll.fields:
            for cat in f.data_categories:
                if cat not in self.data_categories:
                    raise ValueError(
                        f"{where}.fields[{f.name}].data_categories: unknown category {cat!r}; "
                        f"add it to 'data_categories' or use one of {sorted(self.data_categories)}"
                    )
            for ref in f.references:
                target = names.get(ref.collection)
                if target is None or ref.field not in target.field_names:
                    raise ValueError(
                        f"{where}.fields[{f.name}].references: {ref.collection}.{ref.field} "
                        "does not exist in this system"
                    )
            if f.erasure == "keep" and not held:
                raise ValueError(
                    f"{where}.fields[{f.name}].erasure: 'keep' needs retention.legal_hold: true "
                    "on the collection (only a legal obligation justifies keeping data)"
                )

    # -- queries --------------------------------------------------------------------------
    def system(self, key: str) -> System:
        for s in self.systems:
            if s.key == key:
                return s
        raise KeyError(f"unknown system {key!r}; valid: {[s.key for s in self.systems]}")

    def partners(self, family: str | None = None) -> list[System]:
        return [s for s in self.systems if s.family != "internal" and (family is None or s.family == family)]

    def internal_groups(self, system_key: str) -> dict[str, list[Collection]]:
        """Collections of an internal system grouped by their ``group`` (one gather task each)."""
        groups: dict[str, list[Collection]] = {}
        for coll in self.system(system_key).collections:
            if coll.personal:
                groups.setdefault(coll.group or coll.name, []).append(coll)
        return groups


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"{loc or '<root>'}: {err['msg']}")
    return "; ".join(lines)


def parse_data_map(raw: dict, source: str = "<data map>") -> DataMap:
    """Validate an already-parsed mapping (tests use this for bad variants)."""
    try:
        return DataMap.model_validate(raw)
    except ValidationError as exc:
        raise DataMapError(f"{source} is invalid: {_format_error(exc)}") from exc


def load_data_map(path: Path | str | None = None) -> DataMap:
    """Load and validate the YAML data map (default: settings.DATA_MAP_PATH)."""
    from include import settings

    path = Path(path or settings.DATA_MAP_PATH)
    try:
        # libyaml's loader where installed: ten times faster, and every task process loads the map
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except FileNotFoundError as exc:
        raise DataMapError(f"data map {path} not found; set DSR_DATA_MAP or create it") from exc
    except yaml.YAMLError as exc:
        raise DataMapError(f"data map {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataMapError(f"data map {path} must be a mapping with 'version', 'controller', 'systems'")
    return parse_data_map(raw, str(path))
