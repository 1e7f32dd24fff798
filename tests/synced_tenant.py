"""A tenant under test: the Graph emulator, a tenant config, a Frankli database, and DAG runs.

Shared by tests/integration (its conftest exposes the fixtures) and tests/browser (which imports them).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from graph_emulator import GraphEmulator, Tenant, generate_tenant
from sqlalchemy import Engine, create_engine, inspect, select

REPO = Path(__file__).resolve().parents[1]
ORGANISATION = "Acme Corp"
_DAG_MODULE: ModuleType | None = None


def dag_module() -> ModuleType:
    """The DAG file, imported once (it only wires; `build_dag` makes a DAG for any tenant config)."""
    global _DAG_MODULE
    if _DAG_MODULE is None:
        spec = importlib.util.spec_from_file_location("entra_to_frankli_dag", REPO / "dags" / "entra_to_frankli.py")
        assert spec and spec.loader
        _DAG_MODULE = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_DAG_MODULE)
    return _DAG_MODULE


@dataclass
class SyncedTenant:
    """One tenant wired end to end; `run()` executes the real DAG with `dag.test()`."""

    name: str
    directory: Tenant
    emulator: GraphEmulator
    frankli_url: str
    workdir: Path
    tenant_extra: dict[str, Any] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    scim: Any = None  # the ScimTestServer of a SCIM target (None: a database target)
    target_settings: dict[str, Any] = field(default_factory=dict)  # more target keys (a SCIM target's)

    @property
    def config_path(self) -> Path:
        return self.workdir / "tenants.yaml"

    @property
    def reports_dir(self) -> Path:
        return self.workdir / "reports"

    def write_config(self) -> None:
        tenant = {
            "name": self.name,
            "schedule": None,
            "source": {"kind": "graph", "conn_id": f"msgraph_{self.name}"},
            "target": {
                "kind": "scim" if self.scim else "database",
                "conn_id": f"frankli_{self.name}",
                "organisation": ORGANISATION,
                **self.target_settings,
            },
            "scope": {"exclude_guests": True},
            **self.tenant_extra,
        }
        # A tripped deletion guard fails the run at once unless a test asks for the approval step (it waits).
        tenant["thresholds"] = {"archive_approval_hours": 0, **(tenant.get("thresholds") or {})}
        config = {
            "reports_dir": str(self.reports_dir),
            "staging_conn_id": f"staging_{self.name}",
            "tenants": [tenant],
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def run(self, conf: dict[str, Any] | None = None, expect: str = "success") -> Any:
        from frankli_sync.config import load_config

        self.write_config()
        tenant = load_config(self.config_path).tenant(self.name)
        dag = dag_module().build_dag(tenant)
        dag_run = dag.test(run_conf=conf or {})
        self.runs.append(dag_run)
        assert dag_run.state == expect, f"DAG run ended {dag_run.state}, expected {expect}"
        return dag_run

    def engine(self) -> Engine:
        return create_engine(self.frankli_url)

    def seed(self, table: str, rows: list[dict[str, Any]]) -> list[int]:
        """Insert rows straight into a Frankli table (as Frankli itself would); returns their ids.

        Creates the schema and the tenant's organisation first; `organisation_id`,
        `created_at` / `updated_at` and, for users, `status` get defaults.
        """
        from datetime import UTC, datetime

        from frankli_sync.sinks.database import organisation_transaction
        from frankli_sync.sinks.schema import metadata

        engine = self.engine()
        now = datetime.now(UTC)
        try:
            with organisation_transaction(engine, ORGANISATION) as (connection, org_id):
                target = metadata.tables[table]
                ids = []
                for row in rows:
                    values = {"organisation_id": org_id, "created_at": now, **row}
                    if table == "users":
                        values = {"status": "active", "updated_at": now, **values}
                    elif table != "sync_audit":
                        values = {"created_by": "frankli", **values}
                    ids.append(connection.execute(target.insert().values(values)).inserted_primary_key[0])
        finally:
            engine.dispose()
        return ids

    def execute(self, statement: Any) -> None:
        """Run one SQLAlchemy statement against the Frankli database (an admin's change in Frankli)."""
        engine = self.engine()
        try:
            with engine.begin() as connection:
                connection.execute(statement)
        finally:
            engine.dispose()

    def run_task(self, step: str, run_index: int = -1, conf: dict[str, Any] | None = None) -> Any:
        """Re-run one task body of an earlier run with its run id, as clearing it in the UI does."""
        from frankli_sync import pipeline

        run_id = self.runs[run_index].run_id
        return getattr(pipeline, step)(self.name, run_id, conf or {})

    def users(self) -> dict[str, dict[str, Any]]:
        """Frankli users keyed by external id (or email for unmanaged ones)."""
        from frankli_sync.sinks.schema import users

        rows = self.table(users.name)
        return {r["external_id"] or f"email:{r['email']}": dict(r) for r in rows}

    def table(self, name: str) -> list[dict[str, Any]]:
        return _rows(self.frankli_url, name)

    def people(self) -> dict[str, dict[str, Any]]:
        """Frankli's users as either target holds them, keyed by external id (or ``email:<address>``).

        Fields by Frankli name: the text fields, role / department / site as names, the manager as
        the manager's external id, and ``archived`` (True / False). The database and the SCIM
        target answer alike, so one scenario test can check both.
        """
        if self.scim is not None:
            from frankli_sync.sinks.scim_users import user_row

            rows = [user_row(r, {}) for r in self.scim.users().values()]
            return _people(rows, lambda table, value: value)  # SCIM: an entity is its name
        entities = {t: {r["id"]: r["name"] for r in self.table(t)} for t in ("roles", "departments", "sites")}
        return _people(self.table("users"), lambda table, value: entities[table].get(value))

    def add_frankli_user(self, email: str, first_name: str, last_name: str) -> str:
        """A user created in Frankli itself (by an admin, or by Entra's own provisioning): its id there."""
        return self.seed_frankli_user(email, first_name=first_name, last_name=last_name)

    def seed_frankli_user(
        self, email: str, *, external_id: str | None = None, status: str = "active", **fields: Any
    ) -> str:
        """A user Frankli holds that this sync did not create: its id there (as `frankli_ids` gives it).

        Made by an admin (`external_id` None), or linked to an Entra account by an earlier provisioning
        (`external_id` set). `fields` by Frankli name (`first_name`, `city`, ...; `role`, `department`
        and `site` as names, found or made as Frankli's own entities on a database). `status`: Frankli's
        (``uninvited`` / ``invited`` / ``active``), or ``archived`` (by an admin). SCIM knows `active`
        only: every status but ``archived`` is ``active: true`` there.
        """
        unknown = set(fields) - set(_SCIM_FIELDS) - {"first_name", "last_name", "role", "department"}
        assert not unknown, f"no such Frankli field to seed: {sorted(unknown)}"
        if self.scim is not None:
            return str(self.scim.add_user(_scim_user(email, external_id, status != "archived", fields))["id"])
        from datetime import UTC, datetime

        row: dict[str, Any] = {"email": email, "external_id": external_id, "status": status}
        for entity in ("role", "department", "site"):
            if entity in fields:
                name = fields.pop(entity)
                row[f"{entity}_id"] = None if name is None else self._entity_id(f"{entity}s", name)
        if status == "archived":
            row.update(archived_by="frankli", archived_at=datetime.now(UTC))
        return str(self.seed("users", [{**row, **fields}])[0])

    def _entity_id(self, table: str, name: str) -> int:
        """The Frankli entity of that name (made as Frankli makes one when there is none)."""
        found = [r["id"] for r in self.table(table) if r["name"] == name]
        return found[0] if found else self.seed(table, [{"name": name}])[0]

    def frankli_ids(self) -> dict[str, str]:
        """Frankli's own id of each user (the row id; the SCIM id), keyed as `people` keys them."""
        return {key: str(user["id"]) for key, user in self.stored_users().items()}

    def statuses(self) -> dict[str, str | None]:
        """Each user's status in Frankli, keyed as `people` keys them.

        The database's `users.status`; over SCIM, which knows `active` only, ``active`` for
        ``active: true``, ``archived`` for ``active: false`` (None when the user does not say).
        """
        if self.scim is None:
            return {key: user["status"] for key, user in self.users().items()}
        named = {True: "active", False: "archived"}
        return {key: named.get(user.get("active")) for key, user in self.stored_users().items()}

    def stored_users(self) -> dict[str, dict[str, Any]]:
        """Each user exactly as the target stores it, keyed as `people` keys them: a `users` row (its
        `updated_at` too), or a SCIM resource (its `meta` too). Equal twice: nothing wrote to it between."""
        if self.scim is None:
            return self.users()
        return {r.get("externalId") or f"email:{r['userName']}": r for r in self.scim.users().values()}

    def deactivate_in_frankli(self, external_id: str) -> None:
        """A Frankli admin archives (deactivates) a synced user."""
        if self.scim is not None:
            self.scim.patch_user(self._scim_id(external_id), [{"op": "replace", "path": "active", "value": False}])
            return
        from datetime import UTC, datetime

        from frankli_sync.sinks.schema import users
        from sqlalchemy import update

        self.execute(
            update(users)
            .where(users.c.external_id == external_id)
            .values(status="archived", archived_by="admin", archived_at=datetime.now(UTC))
        )

    def rename_in_frankli(self, external_id: str, first_name: str) -> None:
        """A Frankli admin edits a synced user's first name (the sync does not know of it)."""
        if self.scim is not None:
            operation = {"op": "replace", "path": "name.givenName", "value": first_name}
            self.scim.patch_user(self._scim_id(external_id), [operation])
            return
        from frankli_sync.sinks.schema import users
        from sqlalchemy import update

        self.execute(update(users).where(users.c.external_id == external_id).values(first_name=first_name))

    def _scim_id(self, external_id: str) -> str:
        return next(u["id"] for u in self.scim.users().values() if u.get("externalId") == external_id)

    def audit(self, run_id: str | None = None) -> list[dict[str, Any]]:
        rows = self.ledger_table("sync_audit") if self.scim is not None else self.table("sync_audit")
        return [r for r in rows if run_id is None or r["run_id"] == run_id]

    def ledger_table(self, name: str) -> list[dict[str, Any]]:
        """A table of the SCIM target's ledger (the staging database)."""
        return _rows(f"sqlite:///{self.workdir / 'staging.db'}", name)

    def report(self, run_index: int = -1) -> dict[str, Any]:
        from frankli_sync.report import run_directory

        run_id = self.runs[run_index].run_id
        return json.loads((run_directory(self.reports_dir, self.name, run_id) / "report.json").read_text())


# Frankli field -> where a SCIM user holds it (a sub-attribute of its work address, or a typed phone number).
_SCIM_FIELDS = {
    "street_address": ("addresses", "streetAddress"),
    "city": ("addresses", "locality"),
    "postal_code": ("addresses", "postalCode"),
    "country": ("addresses", "country"),
    "site": ("addresses", "formatted"),
    "phone": ("phoneNumbers", "work"),
    "mobile_phone": ("phoneNumbers", "mobile"),
}
_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def _scim_user(email: str, external_id: str | None, active: bool, fields: dict[str, Any]) -> dict[str, Any]:
    """The SCIM body of a user made in Frankli (written out here, not by the sink under test)."""
    body: dict[str, Any] = {"userName": email, "active": active}
    body["emails"] = [{"value": email, "type": "work", "primary": True}]
    if external_id is not None:
        body["externalId"] = external_id
    name = {scim: fields[f] for f, scim in (("first_name", "givenName"), ("last_name", "familyName")) if f in fields}
    if name:
        body["name"] = name
    address = {sub: fields[f] for f, (multi, sub) in _SCIM_FIELDS.items() if multi == "addresses" and f in fields}
    if address:
        body["addresses"] = [{"type": "work", **address}]
    phones = [
        {"type": kind, "value": fields[f]}
        for f, (multi, kind) in _SCIM_FIELDS.items()
        if multi == "phoneNumbers" and f in fields
    ]
    if phones:
        body["phoneNumbers"] = phones
    if "role" in fields:
        body["title"] = fields["role"]
    if "department" in fields:
        body["schemas"] = ["urn:ietf:params:scim:schemas:core:2.0:User", _ENTERPRISE]
        body[_ENTERPRISE] = {"department": fields["department"]}
    return body


def _rows(url: str, name: str) -> list[dict[str, Any]]:
    """A Frankli-schema table's rows in id order (none when nothing ever created it: a report never does)."""
    from frankli_sync.sinks.schema import metadata

    table = metadata.tables[name]
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(name):
                return []
            return [dict(r) for r in connection.execute(select(table).order_by(table.c.id)).mappings()]
    finally:
        engine.dispose()


def _people(rows: list[dict[str, Any]], entity_name: Callable[[str, Any], Any]) -> dict[str, dict[str, Any]]:
    """Frankli user rows (`users` columns) as `SyncedTenant.people` gives them."""
    from frankli_sync.transform import TEXT_FIELDS

    external = {r["id"]: r["external_id"] for r in rows}
    people = {}
    for r in rows:
        person = {f: r[f] for f in TEXT_FIELDS if f != "start_date"}
        person.update(
            role=entity_name("roles", r["role_id"]),
            department=entity_name("departments", r["department_id"]),
            site=entity_name("sites", r["site_id"]),
            manager=external.get(r["manager_id"]),
            archived=r["status"] == "archived",
        )
        people[r["external_id"] or f"email:{r['email']}"] = person
    return people


@pytest.fixture
def dag_file() -> ModuleType:
    """The imported DAG file that `SyncedTenant.run` builds DAGs with (patch its DEFAULT_ARGS to change them)."""
    return dag_module()


@pytest.fixture(params=["sqlite", "postgres"])
def frankli_url(request: pytest.FixtureRequest) -> str | None:
    """Run a test once per Frankli database backend (None = the tenant's own SQLite file)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", "postgres", "scim"])
def frankli_target(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`make_tenant`'s keywords for one Frankli target: the database (SQLite, PostgreSQL) or the SCIM API."""
    if request.param == "scim":
        return {"target": "scim"}
    if request.param == "postgres":
        return {"frankli_url": request.getfixturevalue("postgres_url")}
    return {}


@pytest.fixture
def make_tenant(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., SyncedTenant]]:
    """Factory: `make_tenant(users=300, seed=7, frankli_url=None, target="database"|"scim", **tenant_config)`."""
    started: list[GraphEmulator] = []
    servers: list[Any] = []

    def make(
        users: int = 300,
        seed: int = 7,
        frankli_url: str | None = None,
        name: str = "acme",
        entra_tenant_id: str = "test-tenant",
        target: str = "database",
        target_settings: dict[str, Any] | None = None,
        **tenant_extra: Any,
    ) -> SyncedTenant:
        workdir = tmp_path / name
        workdir.mkdir()
        directory = generate_tenant(users, seed=seed)
        emulator = GraphEmulator(directory).start()
        started.append(emulator)
        url = frankli_url or f"sqlite:///{workdir / 'frankli.db'}"
        msgraph = {
            "conn_type": "msgraph",
            "login": "test-client",
            "password": "test-secret",
            "extra": {
                "tenant_id": entra_tenant_id,
                "base_url": emulator.base_url,
                "allowed_hosts": "graph.microsoft.com",
            },
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_MSGRAPH_{name.upper()}", json.dumps(msgraph))
        scim = None
        if target == "scim":
            from scim_test_server import ScimTestServer

            scim = ScimTestServer().start()
            servers.append(scim)
            monkeypatch.setenv(f"AIRFLOW_CONN_FRANKLI_{name.upper()}", json.dumps(scim.connection()))
        else:
            monkeypatch.setenv(
                f"AIRFLOW_CONN_FRANKLI_{name.upper()}",
                json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}),
            )
        monkeypatch.setenv(
            f"AIRFLOW_CONN_STAGING_{name.upper()}",
            json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": f"sqlite:///{workdir / 'staging.db'}"}}),
        )
        tenant = SyncedTenant(
            name=name,
            directory=directory,
            emulator=emulator,
            frankli_url=url,
            workdir=workdir,
            tenant_extra=tenant_extra,
            scim=scim,
            target_settings=dict(target_settings or {}),
        )
        tenant.write_config()
        monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(tenant.config_path))
        return tenant

    yield make
    for emulator in started:
        emulator.stop()
    for server in servers:
        server.stop()


def valid_leaves(directory: Tenant) -> list[str]:
    """Valid members with a manager who manage nobody (deleting them changes nobody else)."""
    managing = set(directory.managers.values())
    return [
        u["id"]
        for u in directory.users_sorted()
        if directory.is_valid_member(u) and directory.manager_of(u["id"]) and u["id"] not in managing
    ]
