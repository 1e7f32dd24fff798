"""Typed tenant settings read from the YAML file at ``$FRANKLI_SYNC_CONFIG``.

Every key is checked: an unknown key or a bad value is a ``ConfigError`` naming the field by its
path (``tenants[0].mapping.site.from``), so a typo fails loudly instead of syncing with a default.

Errors are as narrow as they can be:

- a problem of the file (unreadable, over ``MAX_CONFIG_BYTES``, not YAML, a duplicate key, a YAML
  anchor or alias, an unknown top-level key, no tenants) raises from ``load_config`` / ``parse_config``;
- a problem of one tenant (a bad key or value, an invalid schedule, a name already taken, a Frankli
  organisation another tenant already syncs) breaks only that tenant: it is left out of
  ``SyncConfig.tenants`` and listed in ``SyncConfig.errors``; the other tenants load. The DAG folder
  turns the broken tenants into one Airflow import error (``dags/entra_to_frankli_config_errors.py``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter

from frankli_sync.entra import ENTRA_ATTRIBUTES, graph_select

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
# The Entra attributes an expression may read: every attribute the sync reads but the manager reference.
EXPRESSION_ATTRIBUTES = frozenset(name for name in ENTRA_ATTRIBUTES if name != "manager")
# Fields whose source is fixed: matching and the manager graph depend on them.
FIXED_SOURCES = {"manager": "manager"}
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
SOURCE_KINDS = ("graph", "csv")
TARGET_KINDS = ("database", "scim")
# Frankli fields the SCIM API has no attribute for: a SCIM tenant does not sync them (README, rules table).
SCIM_UNWRITABLE = ("start_date",)
SCIM_SETTINGS = (
    "concurrency",
    "page_size",
    "max_failure_share",
    "max_retry_after_seconds",
    "max_retry_seconds",
    "start_date_attribute",
)
# An extension attribute's full name: the schema URN, a colon, the attribute (RFC 7644 §3.10).
EXTENSION_ATTRIBUTE = re.compile(r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[^\s\"]+:([A-Za-z][A-Za-z0-9_-]*)$")
DEFAULT_REPORT_RETENTION_DAYS = 90
DEFAULT_SCHEDULE = "@daily"
# A tenant list is a few KiB; anything past this is refused before it is read.
MAX_CONFIG_BYTES = 1024 * 1024
# Airflow 3.3's schedule strings (airflow.sdk.definitions.timetables._cron.CRON_PRESETS and
# airflow.sdk.definitions.dag._create_timetable); any other string is a cron expression read by croniter.
# tests/dags/test_dag_integrity.py checks that this agrees with Airflow's own timetable validation.
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
SPECIAL_SCHEDULES = ("@once", "@continuous")
# What a tenant's notify block can mail about (frankli_sync.notifications).
NOTIFY_EVENTS = ("failure", "guard", "quarantine")
DEFAULT_NOTIFY_CONN_ID = "smtp_default"
# One ASCII address, no display name: nothing that could end a header or add a recipient (no spaces, line
# breaks, quotes, angle brackets, commas).
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL_ADDRESS = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*$")


class ConfigError(ValueError):
    """The sync configuration is invalid; the message names the field."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (only true / false), no anchors or aliases, no duplicate keys.

    YAML 1.1 also reads on / off / yes / no as booleans, which turns the mapping key
    ``on:`` of ``site: {from: officeLocation, on: always}`` into ``True``.
    Anchors and aliases are refused before any node is composed from them: a list of tenants never
    needs them, and aliases nested in aliases (a "billion laughs" document) expand exponentially.
    A duplicate key is refused too (YAML loaders silently keep the last value).
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases (&{event.anchor}, *{event.anchor}) "
                "are not allowed in the sync config; write the values out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = first_lines.get(key)
            except TypeError:  # an unhashable key: SafeConstructor refuses it with its own error
                continue
            if first is not None:
                raise ConfigError(
                    f"line {line}: duplicate key {key!r} (first at line {first}); each key may appear once"
                )
            first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class FieldMapping:
    """Where a Frankli field's value comes from: one Entra attribute (``from:``) or an Entra expression.

    ``source``: the Entra attribute (``officeLocation``), None for an expression. ``expression``: the
    expression's text as written in Entra (``Join(" ", [givenName], [surname])``), checked at load.
    ``on``: ``always`` (kept in step) or ``create`` (set once, when the user is created).
    """

    source: str | None  # Entra attribute name, e.g. "officeLocation"; None for an expression
    on: str  # "always" | "create"
    expression: str | None = None

    @property
    def column(self) -> str | None:
        """The staging column holding the source attribute (None for an expression)."""
        return ENTRA_ATTRIBUTES[self.source] if self.source else None

    @property
    def attributes(self) -> frozenset[str]:
        """The Entra attributes the value is made of."""
        if self.expression is None:
            return frozenset({self.source} if self.source else ())
        from frankli_sync.expressions import attributes_of, parse

        return frozenset(attributes_of(parse(self.expression)))


@dataclass(frozen=True)
class SourceSettings:
    """Where users are read from, and how patiently.

    - ``page_size``: users per Graph page (1..999).
    - ``full_resync_days``: incremental (delta) reads are used between full reads; a full read is
      forced after this many days (0: always read everything).
    - ``max_retry_after_seconds`` (>= 1): the longest Graph ``Retry-After`` the extract waits; a longer
      one fails the task naming Graph's value.
    - ``max_retry_seconds`` (>= 1, >= ``max_retry_after_seconds``): the total time one extract may spend
      waiting on retries.
    - ``count_tolerance_share`` (0..1) and ``count_tolerance_users`` (>= 0): a full read is complete when
      the users received are at least the count the source reports minus ``count_tolerance(reported)``.
    """

    kind: str = "graph"
    conn_id: str | None = None
    path: str | None = None
    page_size: int = 999
    full_resync_days: int = 7
    max_retry_after_seconds: int = 300
    max_retry_seconds: int = 1800
    count_tolerance_share: float = 0.01
    count_tolerance_users: int = 5

    def count_tolerance(self, reported_count: int) -> int:
        """Users a complete full read may lack: max(count_tolerance_users, floor(share x reported count))."""
        share = math.floor(Fraction(str(self.count_tolerance_share)) * reported_count)
        return max(self.count_tolerance_users, share)


@dataclass(frozen=True)
class TargetSettings:
    """Where the sync writes. The SCIM-only settings (a database target refuses them):

    - ``concurrency`` (1-64): SCIM requests in flight at once;
    - ``page_size`` (>= 1): users per page of the ``GET /Users`` listing (the server may cap it lower);
    - ``max_failure_share`` (0-1): the share of one load's user writes the API may refuse before the
      task fails (below it, each refused user is audited and reported, and the next run tries again);
    - ``max_retry_after_seconds`` / ``max_retry_seconds``: as a Graph source's (same defaults, same caps);
    - ``start_date_attribute``: the attribute of the endpoint's own schema extension that holds the start
      date (``urn:…:User:startDate``); without it a SCIM tenant does not sync ``start_date`` (the
      standard User schemas have no such attribute). The sink checks the endpoint declares it.
    """

    kind: str
    conn_id: str
    organisation: str
    concurrency: int = 8
    page_size: int = 500
    max_failure_share: float = 0.02
    max_retry_after_seconds: int = 300
    max_retry_seconds: int = 1800
    start_date_attribute: str | None = None


@dataclass(frozen=True)
class ScopeSettings:
    """Who is synced. ``filters``: Entra's attribute scoping filters (`scope_filters`): a user is in scope
    when every clause of at least one filter holds; no filters: everyone. Users leaving scope are
    archived ``out_of_scope``."""

    groups: tuple[str, ...] = ()
    exclude_guests: bool = False
    only_enabled: bool = False
    filters: tuple[Any, ...] = ()  # scope_filters.ScopeFilter


@dataclass(frozen=True)
class Thresholds:
    max_invalid_share: float = 0.05
    max_archive_count: int = 500
    max_archive_share: float = 0.10
    # An extract with fewer users than this share of the last synced snapshot never archives.
    min_source_share: float = 0.5
    # When the guard stops the archives of a read proven complete, the run waits this long for a person to
    # approve them in Airflow's "Required actions" (no answer: rejected). 0: no approval, the run fails at once.
    # The tenant's next runs wait behind a run awaiting approval (one active run per tenant).
    archive_approval_hours: float = 8.0


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
class NotifySettings:
    """Who is mailed about a tenant's runs, and on what (sent by ``frankli_sync.notifications``).

    - ``conn_id``: the Airflow SMTP connection (host, port, login, password, extra ``from_email``);
      its secrets stay in Airflow and are never logged.
    - ``to``: the recipients; ``from_email``: the sender (default: the connection's ``from_email``).
    - ``on``: any of ``failure`` (a step failed, or the run timed out), ``guard`` (the deletion guard
      stopped archiving) and ``quarantine`` (more than ``quarantine_warn_share`` of the in-scope users
      quarantined, below ``thresholds.max_invalid_share``, which stops the run). Default: ``failure`` and
      ``guard``, plus ``quarantine`` when ``quarantine_warn_share`` is set.
    """

    to: tuple[str, ...]
    conn_id: str = DEFAULT_NOTIFY_CONN_ID
    on: tuple[str, ...] = ("failure", "guard")
    quarantine_warn_share: float | None = None
    from_email: str | None = None


@dataclass(frozen=True)
class TenantConfig:
    name: str
    source: SourceSettings
    target: TargetSettings
    schedule: str | None = DEFAULT_SCHEDULE
    scope: ScopeSettings = field(default_factory=ScopeSettings)
    mapping: Mapping[str, FieldMapping] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    notify: NotifySettings | None = None  # None: no mail

    @property
    def dag_id(self) -> str:
        return f"entra_to_frankli__{self.name}"

    @property
    def attributes_read(self) -> frozenset[str]:
        """The Entra attributes the tenant's mapping, scoping filters and validation read."""
        names = {name for rule in self.mapping.values() for name in rule.attributes}
        names |= {clause.attribute for scope_filter in self.scope.filters for clause in scope_filter.clauses}
        return frozenset(names | set(self.validation.required_fields) | set(self.validation.warn_fields))

    @property
    def graph_select(self) -> tuple[str, ...]:
        """The Graph `$select` of the tenant's reads: the attributes always read and the optional ones it needs."""
        return graph_select(self.attributes_read)


@dataclass(frozen=True)
class SyncConfig:
    """The config file: its valid tenants, and the broken ones with their errors.

    ``errors`` maps each broken tenant, by name (or ``tenants[i]`` when its name is missing, invalid or
    already taken by an earlier entry), to the message naming the tenant and the field.
    """

    tenants: tuple[TenantConfig, ...]
    reports_dir: Path
    staging_conn_id: str | None = None
    # Run reports older than this are deleted when a new report of the tenant is written; None keeps all.
    report_retention_days: int | None = DEFAULT_REPORT_RETENTION_DAYS
    errors: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None  # the file it was loaded from, if any

    def tenant(self, name: str) -> TenantConfig:
        """The valid tenant `name`; a broken or unknown one raises ConfigError with its error."""
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        if name in self.errors:
            raise ConfigError(self.errors[name])
        raise ConfigError(f"tenant {name!r} is not in the config (known: {[t.name for t in self.tenants]})")

    @property
    def names(self) -> list[str]:
        """Names of the valid tenants and of the broken ones whose name is known, in file order."""
        return [t.name for t in self.tenants] + [label for label in self.errors if TENANT_NAME.match(label)]

    def errors_message(self) -> str:
        """One message naming every broken tenant and its field ('' when none is broken)."""
        if not self.errors:
            return ""
        where = f" in {self.path}" if self.path else ""
        heading = (
            f"{len(self.errors)} broken tenant(s){where} have no DAG until fixed "
            f"(the {len(self.tenants)} valid tenant(s) load):"
        )
        return "\n".join([heading, *(f"- {message}" for message in self.errors.values())])


def config_path() -> Path:
    """The config file in force: ``$FRANKLI_SYNC_CONFIG`` or the shipped demo config."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else DEMO_CONFIG


def load_config(path: Path | None = None) -> SyncConfig:
    """The config at `path` (default: ``config_path()``); raises ConfigError for a problem of the file."""
    path = path or config_path()
    try:
        raw = yaml.load(_read_bounded(path), Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as error:
        raise ConfigError(f"config file {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    except RecursionError as error:
        raise ConfigError(f"config file {path}: YAML nested too deeply") from error
    return parse_config(raw, base_dir=path.parent, path=path)


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing it unread when it is over MAX_CONFIG_BYTES (and stopping there if it grows)."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{size} bytes; the limit is {MAX_CONFIG_BYTES} (MAX_CONFIG_BYTES)")
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as error:
        raise ConfigError(f"does not exist (set ${CONFIG_ENV})") from error
    except OSError as error:
        raise ConfigError(f"cannot be read: {error}") from error
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"over {MAX_CONFIG_BYTES} bytes (MAX_CONFIG_BYTES)")
    return data


def parse_config(raw: Any, base_dir: Path = Path(), path: Path | None = None) -> SyncConfig:
    """Check the parsed YAML: file-level problems raise ConfigError, a broken tenant lands in ``errors``."""
    top = _mapping(raw, "config")
    _no_unknown_keys(top, {"reports_dir", "staging_conn_id", "report_retention_days", "tenants"}, "config")
    tenants_raw = top.get("tenants")
    if not isinstance(tenants_raw, list) or not tenants_raw:
        raise ConfigError("tenants: must be a non-empty list")
    tenants, errors = _tenants(tenants_raw, base_dir)
    reports_dir = Path(_str(top.get("reports_dir", "reports"), "reports_dir"))
    if not reports_dir.is_absolute():
        reports_dir = (base_dir / reports_dir).resolve()
    staging = top.get("staging_conn_id")
    return SyncConfig(
        tenants=tenants,
        reports_dir=reports_dir,
        staging_conn_id=_str(staging, "staging_conn_id") if staging is not None else None,
        report_retention_days=_retention(top.get("report_retention_days", DEFAULT_REPORT_RETENTION_DAYS)),
        errors=errors,
        path=path,
    )


def _retention(value: Any) -> int | None:
    if value is None:
        return None
    return _int_at_least(value, 1, "report_retention_days", " (or null to keep every report)")


def _tenants(items: list[Any], base_dir: Path) -> tuple[tuple[TenantConfig, ...], dict[str, str]]:
    """Each entry parsed on its own: the valid tenants, and the broken ones' errors by name or ``tenants[i]``.

    An entry whose name an earlier entry has, or whose Frankli organisation an earlier entry already
    targets, is broken: the earlier one keeps them, even when it is broken itself (fixing it must not
    move the organisation to another tenant).
    """
    tenants: list[TenantConfig] = []
    errors: dict[str, str] = {}
    names: dict[str, str] = {}  # tenant name -> where it was first given
    owners: dict[tuple[str, ...], str] = {}  # (target kind, conn id, organisation) -> the first tenant on it
    for i, item in enumerate(items):
        where = f"tenants[{i}]"
        name = _free_name(item, where, names)
        if name:
            names[name] = where
        try:
            who = f"tenant {name!r} ({where})" if name else where
            _check_owner(_target_or_none(item, where), who, where, owners)
            if name is None:
                _tenant_name(item, where, names)  # raises, saying what is wrong with the name
            tenants.append(_tenant(item, where, base_dir))
        except ConfigError as error:
            errors[name or where] = f"tenant {name!r}: {error}" if name else str(error)
    return tuple(tenants), errors


def _tenant_name(raw: Any, where: str, taken: Mapping[str, str]) -> str:
    name = _str(_mapping(raw, where).get("name"), f"{where}.name")
    if not TENANT_NAME.match(name):
        raise ConfigError(f"{where}.name: {name!r} must be lower-case letters, digits and underscores")
    if name in taken:
        raise ConfigError(f"{where}.name: {name!r} is already the name of {taken[name]}; names must be unique")
    return name


def _free_name(raw: Any, where: str, taken: Mapping[str, str]) -> str | None:
    """The entry's name if it is valid and no earlier entry has it, else None."""
    try:
        return _tenant_name(raw, where, taken)
    except ConfigError:
        return None


def _target_or_none(raw: Any, where: str) -> TargetSettings | None:
    try:
        return _target(_mapping(raw, where).get("target"), f"{where}.target")
    except ConfigError:
        return None


def _check_owner(target: TargetSettings | None, who: str, where: str, owners: dict[tuple[str, ...], str]) -> None:
    """Refuse a second tenant on one Frankli organisation: each would archive the other's users.

    Same organisation: same target kind, conn id and organisation name, compared trimmed and
    case-insensitively (conn ids too: ``AIRFLOW_CONN_<ID>`` upper-cases them).
    """
    if target is None:
        return
    key = (target.kind, target.conn_id.casefold(), target.organisation.strip().casefold())
    owner = owners.setdefault(key, who)
    if owner == who:
        return
    raise ConfigError(
        f"{where}.target.organisation: the Frankli organisation {target.organisation!r} of the {target.kind} "
        f"connection {target.conn_id!r} is already synced by {owner}; two tenants on one organisation would "
        "each archive the other's users. Give each tenant its own organisation"
    )


def _tenant(raw: Any, where: str, base_dir: Path = Path()) -> TenantConfig:
    data = _mapping(raw, where)
    known = {"name", "schedule", "source", "target", "scope", "mapping", "thresholds", "validation", "notify"}
    _no_unknown_keys(data, known, where)
    thresholds = _thresholds(data.get("thresholds", {}), f"{where}.thresholds")
    target = _target(data.get("target"), f"{where}.target")
    return TenantConfig(
        name=_str(data.get("name"), f"{where}.name"),
        schedule=_schedule(data.get("schedule", DEFAULT_SCHEDULE), f"{where}.schedule"),
        source=_source(data.get("source"), f"{where}.source", base_dir),
        target=target,
        scope=_scope(data.get("scope", {}), f"{where}.scope"),
        mapping=_scim_mapping(
            _mapping_settings(data.get("mapping", {}), f"{where}.mapping"), data.get("mapping"), target, where
        ),
        thresholds=thresholds,
        validation=_validation(data.get("validation", {}), f"{where}.validation"),
        notify=_notify(data.get("notify"), f"{where}.notify", thresholds),
    )


def _schedule(value: Any, where: str) -> str | None:
    """An Airflow 3.3 schedule string: a preset, ``@once``, ``@continuous`` or a cron expression; None: manual only.

    Stricter than Airflow in one way: a cron expression that never fires (``0 0 30 2 *``) is refused too.
    """
    if value is None:
        return None
    schedule = _str(value, where)
    if schedule in SPECIAL_SCHEDULES:
        return schedule
    try:
        croniter(CRON_PRESETS.get(schedule, schedule), datetime(2026, 1, 1)).get_next(datetime)
    except ValueError as error:  # CroniterError is one
        raise ConfigError(
            f"{where}: {schedule!r} is not an Airflow schedule ({error}); use a cron expression like '0 3 * * *', "
            f"one of {[*CRON_PRESETS, *SPECIAL_SCHEDULES]}, or null for manual runs only"
        ) from error
    return schedule


def _source(raw: Any, where: str, base_dir: Path = Path()) -> SourceSettings:
    data = _mapping(raw, where)
    defaults = SourceSettings()
    _no_unknown_keys(data, set(defaults.__dataclass_fields__), where)
    kind = _choice(data.get("kind", defaults.kind), SOURCE_KINDS, f"{where}.kind")
    conn_id = data.get("conn_id")
    path = data.get("path")
    if kind == "graph" and not conn_id:
        raise ConfigError(f"{where}.conn_id: required for a graph source (an msgraph Airflow connection)")
    if kind == "csv" and not path:
        raise ConfigError(f"{where}.path: required for a csv source")
    page_size = _int(data.get("page_size", defaults.page_size), f"{where}.page_size")
    if not 1 <= page_size <= 999:
        raise ConfigError(f"{where}.page_size: {page_size} is outside Graph's range 1..999")
    resync = _int(data.get("full_resync_days", defaults.full_resync_days), f"{where}.full_resync_days")
    if resync < 0:
        raise ConfigError(f"{where}.full_resync_days: {resync} must not be negative (0 = always read everything)")
    return SourceSettings(
        full_resync_days=resync,
        kind=kind,
        conn_id=_str(conn_id, f"{where}.conn_id") if conn_id else None,
        path=str((base_dir / _str(path, f"{where}.path")).resolve()) if path else None,
        page_size=page_size,
        **_retry_limits(data, defaults, where),
        **_count_tolerance(data, defaults, where),
    )


def _retry_limits(data: dict[str, Any], defaults: SourceSettings | TargetSettings, where: str) -> dict[str, int]:
    after = _int_at_least(
        data.get("max_retry_after_seconds", defaults.max_retry_after_seconds), 1, f"{where}.max_retry_after_seconds"
    )
    total = _int_at_least(data.get("max_retry_seconds", defaults.max_retry_seconds), 1, f"{where}.max_retry_seconds")
    if after > total:
        raise ConfigError(
            f"{where}.max_retry_after_seconds: {after} is more than max_retry_seconds ({total}), "
            "the total time one extract or load may wait"
        )
    return {"max_retry_after_seconds": after, "max_retry_seconds": total}


def _count_tolerance(data: dict[str, Any], defaults: SourceSettings, where: str) -> dict[str, Any]:
    share = _share(data.get("count_tolerance_share", defaults.count_tolerance_share), f"{where}.count_tolerance_share")
    users = _int_at_least(
        data.get("count_tolerance_users", defaults.count_tolerance_users), 0, f"{where}.count_tolerance_users"
    )
    return {"count_tolerance_share": share, "count_tolerance_users": users}


def _target(raw: Any, where: str) -> TargetSettings:
    data = _mapping(raw, where)
    kind = _choice(data.get("kind", "database"), TARGET_KINDS, f"{where}.kind")
    _no_unknown_keys(data, {"kind", "conn_id", "organisation", *(SCIM_SETTINGS if kind == "scim" else ())}, where)
    common = {
        "kind": kind,
        "conn_id": _str(data.get("conn_id"), f"{where}.conn_id"),
        "organisation": _str(data.get("organisation"), f"{where}.organisation"),
    }
    if kind != "scim":
        return TargetSettings(**common)
    defaults = TargetSettings(**common)
    concurrency = _int_at_least(data.get("concurrency", defaults.concurrency), 1, f"{where}.concurrency")
    if concurrency > 64:
        raise ConfigError(f"{where}.concurrency: {concurrency} requests at once is more than 64; lower it")
    return TargetSettings(
        **common,
        concurrency=concurrency,
        page_size=_int_at_least(data.get("page_size", defaults.page_size), 1, f"{where}.page_size"),
        max_failure_share=_share(
            data.get("max_failure_share", defaults.max_failure_share), f"{where}.max_failure_share"
        ),
        **_retry_limits(data, defaults, where),
        start_date_attribute=_extension_attribute(data.get("start_date_attribute"), f"{where}.start_date_attribute"),
    )


def _extension_attribute(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not EXTENSION_ATTRIBUTE.match(raw):
        raise ConfigError(
            f"{where}: {raw!r} is not an extension attribute's full name; give the schema URN your Frankli "
            "endpoint lists under /Schemas, a colon and the attribute, e.g. "
            "'urn:ietf:params:scim:schemas:extension:frankli:2.0:User:startDate'"
        )
    return raw


def _scim_mapping(
    mapping: dict[str, FieldMapping], raw: Any, target: TargetSettings, where: str
) -> dict[str, FieldMapping]:
    """A SCIM tenant's mapping without the fields SCIM cannot hold; naming one of them is an error."""
    if target.kind != "scim":
        return mapping
    named = set(raw or {}) if isinstance(raw, dict) else set()
    unwritable = () if target.start_date_attribute else SCIM_UNWRITABLE
    for name in unwritable:
        if name in named:
            raise ConfigError(
                f"{where}.mapping.{name}: the standard SCIM User schemas have no attribute for {name}, so a SCIM "
                f"target syncs it only into the attribute of your endpoint's schema extension that holds it: set "
                f"{where}.target.start_date_attribute to it (the endpoint's /Schemas list it), or remove "
                f"mapping.{name}"
            )
    return {name: rule for name, rule in mapping.items() if name not in unwritable}


def _scope(raw: Any, where: str) -> ScopeSettings:
    data = _mapping(raw, where)
    _no_unknown_keys(data, {"groups", "exclude_guests", "only_enabled", "filters"}, where)
    groups = data.get("groups", []) or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise ConfigError(f"{where}.groups: must be a list of group object ids")
    return ScopeSettings(
        groups=tuple(groups),
        exclude_guests=_bool(data.get("exclude_guests", False), f"{where}.exclude_guests"),
        only_enabled=_bool(data.get("only_enabled", False), f"{where}.only_enabled"),
        filters=_filters(data["filters"], f"{where}.filters") if "filters" in data else (),
    )


def _filters(raw: Any, where: str) -> tuple[Any, ...]:
    from frankli_sync.scope_filters import ScopeFilterError, parse_filters

    try:
        return parse_filters(raw, where)
    except ScopeFilterError as error:
        raise ConfigError(str(error)) from error


def _mapping_settings(raw: Any, where: str) -> dict[str, FieldMapping]:
    data = _mapping(raw, where)
    _no_unknown_keys(data, set(DEFAULT_MAPPING), where)
    result: dict[str, FieldMapping] = {}
    for frankli_field, (default_source, default_on) in DEFAULT_MAPPING.items():
        item = data.get(frankli_field, {})
        here = f"{where}.{frankli_field}"
        item = _mapping(item, here)
        _no_unknown_keys(item, {"from", "on", "expression"}, here)
        on = _choice(item.get("on", default_on), MAPPING_ON, f"{here}.on")
        if "expression" in item:
            result[frankli_field] = FieldMapping(None, on, _expression(item, frankli_field, here))
            continue
        source = _str(item.get("from", default_source), f"{here}.from")
        if source not in ENTRA_ATTRIBUTES:
            raise ConfigError(
                f"{here}.from: {source!r} is not an Entra attribute the sync reads (one of {sorted(ENTRA_ATTRIBUTES)})"
            )
        fixed = FIXED_SOURCES.get(frankli_field)
        if fixed and source != fixed:
            raise ConfigError(f"{here}.from: {frankli_field} can only come from {fixed!r}")
        result[frankli_field] = FieldMapping(source=source, on=on)
    return result


def _expression(item: dict[str, Any], frankli_field: str, here: str) -> str:
    """The expression's text, read and checked as Entra would: a mistake names the character where it is."""
    from frankli_sync.expressions import ExpressionError, check, parse

    if "from" in item:
        raise ConfigError(f"{here}: give either 'from' (one attribute) or 'expression', not both")
    if frankli_field in FIXED_SOURCES:
        raise ConfigError(f"{here}.expression: {frankli_field} can only come from {FIXED_SOURCES[frankli_field]!r}")
    text = _str(item["expression"], f"{here}.expression")
    try:
        check(parse(text), EXPRESSION_ATTRIBUTES)
    except ExpressionError as error:
        raise ConfigError(f"{here}.expression: {error}: {text}") from error
    return text


def _thresholds(raw: Any, where: str) -> Thresholds:
    data = _mapping(raw, where)
    defaults = Thresholds()
    _no_unknown_keys(data, set(defaults.__dataclass_fields__), where)
    shares = {
        key: _share(data.get(key, getattr(defaults, key)), f"{where}.{key}")
        for key in ("max_invalid_share", "max_archive_share", "min_source_share")
    }
    count = _int_at_least(data.get("max_archive_count", defaults.max_archive_count), 0, f"{where}.max_archive_count")
    approval = "archive_approval_hours"
    hours = _float(data.get(approval, defaults.archive_approval_hours), f"{where}.{approval}")
    if not 0 <= hours <= 24 * 7:
        raise ConfigError(
            f"{where}.archive_approval_hours: {hours:g} must be between 0 (no approval: fail at once) and 168 "
            "(a week); the tenant's later runs wait behind a run awaiting approval"
        )
    return Thresholds(max_archive_count=count, archive_approval_hours=hours, **shares)


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


def _notify(raw: Any, where: str, thresholds: Thresholds) -> NotifySettings | None:
    if raw is None:
        return None
    data = _mapping(raw, where)
    _no_unknown_keys(data, {"conn_id", "to", "on", "quarantine_warn_share", "from_email"}, where)
    to = data.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        raise ConfigError(f"{where}.to: must be a non-empty list of e-mail addresses, got {to!r}")
    recipients = tuple(_address(address, f"{where}.to[{i}]") for i, address in enumerate(to))
    sender = data.get("from_email")
    share = data.get("quarantine_warn_share")
    warn = None if share is None else _share(share, f"{where}.quarantine_warn_share")
    default_on = ["failure", "guard"] + (["quarantine"] if warn is not None else [])
    on = data.get("on", default_on)
    if not isinstance(on, list) or not on:
        raise ConfigError(f"{where}.on: must be a non-empty list of {list(NOTIFY_EVENTS)}, got {on!r}")
    for i, event in enumerate(on):
        _choice(event, NOTIFY_EVENTS, f"{where}.on[{i}]")
    if len(set(on)) != len(on):
        raise ConfigError(f"{where}.on: {on!r} names an event twice")
    stop = thresholds.max_invalid_share
    if "quarantine" in on and warn is None:
        raise ConfigError(
            f"{where}.quarantine_warn_share: required when 'quarantine' is in {where}.on: the share of in-scope "
            f"users quarantined above which to mail, below thresholds.max_invalid_share ({stop}) that stops the "
            "run (e.g. 0.02); or take 'quarantine' out of on"
        )
    if warn is not None and "quarantine" not in on:
        raise ConfigError(
            f"{where}.quarantine_warn_share: set, but 'quarantine' is not in {where}.on {on!r}; "
            "add it to on, or remove the share"
        )
    if warn is not None and warn >= stop:
        raise ConfigError(
            f"{where}.quarantine_warn_share: {warn} must be below thresholds.max_invalid_share ({stop}): above "
            "that share the run stops and the failure mail says so. Lower the warn share (e.g. "
            f"{stop / 2:g}) or raise max_invalid_share"
        )
    return NotifySettings(
        to=recipients,
        conn_id=_str(data.get("conn_id", DEFAULT_NOTIFY_CONN_ID), f"{where}.conn_id"),
        on=tuple(event for event in NOTIFY_EVENTS if event in on),
        quarantine_warn_share=warn,
        from_email=_address(sender, f"{where}.from_email") if sender is not None else None,
    )


def _address(value: Any, where: str) -> str:
    address = _str(value, where)
    if not EMAIL_ADDRESS.fullmatch(address):
        raise ConfigError(f"{where}: {address!r} is not an e-mail address (like ops@contoso.com, no display name)")
    return address


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    return raw


def _no_unknown_keys(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known, key=str)  # keys may be any YAML scalar: 1, true, null
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


def _int_at_least(value: Any, minimum: int, where: str, hint: str = "") -> int:
    number = _int(value, where)
    if number < minimum:
        raise ConfigError(f"{where}: {number} must be at least {minimum}{hint}")
    return number


def _share(value: Any, where: str) -> float:
    number = _float(value, where)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{where}: {number} must be between 0 and 1")
    return number


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
    return value
