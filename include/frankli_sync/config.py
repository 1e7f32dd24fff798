"""Typed tenant settings read from the YAML file at ``$FRANKLI_SYNC_CONFIG``.

Every key is checked: an unknown key or a bad value raises ``ConfigError``
naming the field by its path (``tenants[0].mapping.site.from``), so a typo in
the config fails the DAG import loudly instead of syncing with a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from frankli_sync.entra import ENTRA_ATTRIBUTES

CONFIG_ENV = "FRANKLI_SYNC_CONFIG"
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "tenants.demo.yaml"

# Frankli field -> (default Entra attribute, default "on").
DEFAULT_MAPPING: dict[str, tuple[str, str]] = {
    "first_name": ("givenName", "always"),
    "last_name": ("surname", "always"),
    "email": ("userPrincipalName", "always"),
    "role": ("jobTitle", "always"),
    "department": ("department", "always"),
    "site": ("officeLocation", "always"),
    "manager": ("manager", "always"),
    "street_address": ("streetAddress", "always"),
    "city": ("city", "always"),
    "postal_code": ("postalCode", "always"),
    "country": ("country", "always"),
    "phone": ("businessPhones", "always"),
    "mobile_phone": ("mobilePhone", "always"),
    "start_date": ("employeeHireDate", "always"),
}
MAPPING_ON = ("always", "create")
# Fields whose source is fixed: matching and the manager graph depend on them.
FIXED_SOURCES = {"manager": "manager"}
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
SOURCE_KINDS = ("graph", "csv")
TARGET_KINDS = ("database", "scim")
DEFAULT_REPORT_RETENTION_DAYS = 90


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (only true / false).

    YAML 1.1 also reads on / off / yes / no as booleans, which turns the mapping key
    ``on:`` of ``site: {from: officeLocation, on: always}`` into ``True``.
    """


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class ConfigError(ValueError):
    """The sync configuration is invalid; the message names the field."""


@dataclass(frozen=True)
class FieldMapping:
    source: str  # Entra attribute name, e.g. "officeLocation"
    on: str  # "always" | "create"

    @property
    def column(self) -> str:
        """The staging column holding the source attribute."""
        return ENTRA_ATTRIBUTES[self.source]


@dataclass(frozen=True)
class SourceSettings:
    kind: str = "graph"
    conn_id: str | None = None
    path: str | None = None
    page_size: int = 999
    # Incremental (delta) reads are used between full reads; a full read is forced after this many days.
    full_resync_days: int = 7


@dataclass(frozen=True)
class TargetSettings:
    kind: str
    conn_id: str
    organisation: str


@dataclass(frozen=True)
class ScopeSettings:
    groups: tuple[str, ...] = ()
    exclude_guests: bool = False
    only_enabled: bool = False


@dataclass(frozen=True)
class Thresholds:
    max_invalid_share: float = 0.05
    max_archive_count: int = 500
    max_archive_share: float = 0.10
    # An extract with fewer users than this share of the last synced snapshot never archives.
    min_source_share: float = 0.5


@dataclass(frozen=True)
class ValidationConfig:
    required_fields: tuple[str, ...] = ("userPrincipalName", "mail", "givenName", "surname")
    warn_fields: tuple[str, ...] = ("department", "manager")

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(ENTRA_ATTRIBUTES[name] for name in self.required_fields)

    @property
    def warn_columns(self) -> tuple[str, ...]:
        return tuple(ENTRA_ATTRIBUTES[name] for name in self.warn_fields)


@dataclass(frozen=True)
class TenantConfig:
    name: str
    source: SourceSettings
    target: TargetSettings
    schedule: str | None = "@daily"
    scope: ScopeSettings = field(default_factory=ScopeSettings)
    mapping: Mapping[str, FieldMapping] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    @property
    def dag_id(self) -> str:
        return f"entra_to_frankli__{self.name}"


@dataclass(frozen=True)
class SyncConfig:
    tenants: tuple[TenantConfig, ...]
    reports_dir: Path
    staging_conn_id: str | None = None
    # Run reports older than this are deleted when a new report of the tenant is written; None keeps all.
    report_retention_days: int | None = DEFAULT_REPORT_RETENTION_DAYS

    def tenant(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise ConfigError(f"tenant {name!r} is not in the config (known: {[t.name for t in self.tenants]})")


def config_path() -> Path:
    """The config file in force: ``$FRANKLI_SYNC_CONFIG`` or the shipped demo config."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else DEMO_CONFIG


def load_config(path: Path | None = None) -> SyncConfig:
    path = path or config_path()
    try:
        raw = yaml.load(path.read_text(), Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist (set ${CONFIG_ENV})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    return parse_config(raw, base_dir=path.parent)


def parse_config(raw: Any, base_dir: Path = Path()) -> SyncConfig:
    top = _mapping(raw, "config")
    _no_unknown_keys(top, {"reports_dir", "staging_conn_id", "report_retention_days", "tenants"}, "config")
    tenants_raw = top.get("tenants")
    if not isinstance(tenants_raw, list) or not tenants_raw:
        raise ConfigError("tenants: must be a non-empty list")
    tenants = tuple(_tenant(item, f"tenants[{i}]", base_dir) for i, item in enumerate(tenants_raw))
    names = [t.name for t in tenants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"tenants: duplicate tenant names {duplicates}")
    reports_dir = Path(_str(top.get("reports_dir", "reports"), "reports_dir"))
    if not reports_dir.is_absolute():
        reports_dir = (base_dir / reports_dir).resolve()
    staging = top.get("staging_conn_id")
    return SyncConfig(
        tenants=tenants,
        reports_dir=reports_dir,
        staging_conn_id=_str(staging, "staging_conn_id") if staging is not None else None,
        report_retention_days=_retention(top.get("report_retention_days", DEFAULT_REPORT_RETENTION_DAYS)),
    )


def _retention(value: Any) -> int | None:
    if value is None:
        return None
    days = _int(value, "report_retention_days")
    if days < 1:
        raise ConfigError(f"report_retention_days: {days} must be at least 1 (or null to keep every report)")
    return days


def _tenant(raw: Any, where: str, base_dir: Path = Path()) -> TenantConfig:
    data = _mapping(raw, where)
    known = {"name", "schedule", "source", "target", "scope", "mapping", "thresholds", "validation"}
    _no_unknown_keys(data, known, where)
    name = _str(data.get("name"), f"{where}.name")
    if not TENANT_NAME.match(name):
        raise ConfigError(f"{where}.name: {name!r} must be lower-case letters, digits and underscores")
    schedule = data.get("schedule", "@daily")
    if schedule is not None:
        schedule = _str(schedule, f"{where}.schedule")
    return TenantConfig(
        name=name,
        schedule=schedule,
        source=_source(data.get("source"), f"{where}.source", base_dir),
        target=_target(data.get("target"), f"{where}.target"),
        scope=_scope(data.get("scope", {}), f"{where}.scope"),
        mapping=_mapping_settings(data.get("mapping", {}), f"{where}.mapping"),
        thresholds=_thresholds(data.get("thresholds", {}), f"{where}.thresholds"),
        validation=_validation(data.get("validation", {}), f"{where}.validation"),
    )


def _source(raw: Any, where: str, base_dir: Path = Path()) -> SourceSettings:
    data = _mapping(raw, where)
    _no_unknown_keys(data, {"kind", "conn_id", "path", "page_size", "full_resync_days"}, where)
    kind = _choice(data.get("kind", "graph"), SOURCE_KINDS, f"{where}.kind")
    conn_id = data.get("conn_id")
    path = data.get("path")
    if kind == "graph" and not conn_id:
        raise ConfigError(f"{where}.conn_id: required for a graph source (an msgraph Airflow connection)")
    if kind == "csv" and not path:
        raise ConfigError(f"{where}.path: required for a csv source")
    page_size = _int(data.get("page_size", 999), f"{where}.page_size")
    if not 1 <= page_size <= 999:
        raise ConfigError(f"{where}.page_size: {page_size} is outside Graph's range 1..999")
    resync = _int(data.get("full_resync_days", 7), f"{where}.full_resync_days")
    if resync < 0:
        raise ConfigError(f"{where}.full_resync_days: {resync} must not be negative (0 = always read everything)")
    return SourceSettings(
        full_resync_days=resync,
        kind=kind,
        conn_id=_str(conn_id, f"{where}.conn_id") if conn_id else None,
        path=str((base_dir / _str(path, f"{where}.path")).resolve()) if path else None,
        page_size=page_size,
    )


def _target(raw: Any, where: str) -> TargetSettings:
    data = _mapping(raw, where)
    _no_unknown_keys(data, {"kind", "conn_id", "organisation"}, where)
    kind = _choice(data.get("kind", "database"), TARGET_KINDS, f"{where}.kind")
    if kind == "scim":  # part of the contract, not built yet: refuse loudly rather than sync nowhere
        raise ConfigError(f"{where}.kind: 'scim' (the Frankli SCIM API) is not implemented yet; use 'database'")
    return TargetSettings(
        kind=kind,
        conn_id=_str(data.get("conn_id"), f"{where}.conn_id"),
        organisation=_str(data.get("organisation"), f"{where}.organisation"),
    )


def _scope(raw: Any, where: str) -> ScopeSettings:
    data = _mapping(raw, where)
    _no_unknown_keys(data, {"groups", "exclude_guests", "only_enabled"}, where)
    groups = data.get("groups", []) or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise ConfigError(f"{where}.groups: must be a list of group object ids")
    return ScopeSettings(
        groups=tuple(groups),
        exclude_guests=_bool(data.get("exclude_guests", False), f"{where}.exclude_guests"),
        only_enabled=_bool(data.get("only_enabled", False), f"{where}.only_enabled"),
    )


def _mapping_settings(raw: Any, where: str) -> dict[str, FieldMapping]:
    data = _mapping(raw, where)
    _no_unknown_keys(data, set(DEFAULT_MAPPING), where)
    result: dict[str, FieldMapping] = {}
    for frankli_field, (default_source, default_on) in DEFAULT_MAPPING.items():
        item = data.get(frankli_field, {})
        here = f"{where}.{frankli_field}"
        item = _mapping(item, here)
        _no_unknown_keys(item, {"from", "on"}, here)
        source = _str(item.get("from", default_source), f"{here}.from")
        if source not in ENTRA_ATTRIBUTES:
            raise ConfigError(
                f"{here}.from: {source!r} is not an Entra attribute the sync reads (one of {sorted(ENTRA_ATTRIBUTES)})"
            )
        fixed = FIXED_SOURCES.get(frankli_field)
        if fixed and source != fixed:
            raise ConfigError(f"{here}.from: {frankli_field} can only come from {fixed!r}")
        on = _choice(item.get("on", default_on), MAPPING_ON, f"{here}.on")
        result[frankli_field] = FieldMapping(source=source, on=on)
    return result


def _thresholds(raw: Any, where: str) -> Thresholds:
    data = _mapping(raw, where)
    defaults = Thresholds()
    _no_unknown_keys(data, set(defaults.__dataclass_fields__), where)
    shares = {}
    for key in ("max_invalid_share", "max_archive_share", "min_source_share"):
        value = _float(data.get(key, getattr(defaults, key)), f"{where}.{key}")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}.{key}: {value} must be between 0 and 1")
        shares[key] = value
    count = _int(data.get("max_archive_count", defaults.max_archive_count), f"{where}.max_archive_count")
    if count < 0:
        raise ConfigError(f"{where}.max_archive_count: {count} must not be negative")
    return Thresholds(max_archive_count=count, **shares)


def _validation(raw: Any, where: str) -> ValidationConfig:
    data = _mapping(raw, where)
    defaults = ValidationConfig()
    _no_unknown_keys(data, {"required_fields", "warn_fields"}, where)
    values = {}
    for key in ("required_fields", "warn_fields"):
        names = data.get(key, list(getattr(defaults, key)))
        if not isinstance(names, list):
            raise ConfigError(f"{where}.{key}: must be a list of Entra attribute names")
        for i, name in enumerate(names):
            if name not in ENTRA_ATTRIBUTES:
                raise ConfigError(f"{where}.{key}[{i}]: {name!r} is not an Entra attribute the sync reads")
        values[key] = tuple(names)
    return ValidationConfig(**values)


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    return raw


def _no_unknown_keys(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be a non-empty string, got {value!r}")
    return value.strip()


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
    return value
