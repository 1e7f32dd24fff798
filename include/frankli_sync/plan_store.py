"""A run's plan, kept in staging between its tasks: the transform plans, the loads apply that plan.

Planning a full run reads both snapshots and the whole organisation and costs more than the
writes (at 100,000 users ~6 s per plan against ~3 s of writing); the loads used to plan again,
each. They still do, unless there is evidence that the kept plan describes what they would
compute now (`PlanKey`): the organisation's `frankli_mark` equals the one read *before* the
plan's state was read (for ``load_archives``: the one ``load_upserts`` left after applying this
very plan), and the run's snapshot, its validation, the record and the last synced run it
planned from, and the tenant's settings are the ones it was computed from. Anything else (an
admin's edit in between, a cleared task, a newer run recorded, a changed config) and the load
plans again against what it reads, as a cleared load always did.

Frames are kept as JSON in parts of `PART_ROWS` rows with their dtypes, so they come back with
the values and dtypes they were written with (no pickle: staging is data, never code).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, Text, delete, insert, or_, select, update

from frankli_sync import json_text
from frankli_sync.plan import Plan
from frankli_sync.transform import json_ready

PART_ROWS = 20_000
KEEP_PLANS = 3  # per tenant, besides the one being saved (a backfill runs a few at once)
PLAN_FRAMES = ("entity_creates", "creates", "updates", "links", "restores", "archives", "conflicts")
# What each load applies: a first sync's million creates are not decoded again to archive nobody.
UPSERT_FRAMES = ("entity_creates", "creates", "updates", "links", "restores", "conflicts")
ARCHIVE_FRAMES = ("archives",)

metadata = MetaData()

run_plans = Table(
    "run_plans",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("part", String(64), primary_key=True),  # "key", "findings", "<frame>:<n>"
    Column("payload", Text, nullable=False),
    Column("saved_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class PlanKey:
    """What a plan was computed from; a load applies a kept plan only when all of it still holds."""

    frankli_mark: str  # read before the plan's state
    snapshot: str  # the extraction: status, row count, completion time
    validation: str | None  # digest of the validation document's stored text
    record_run: str | None  # the run the record described
    previous_run: str | None  # the last synced run (the previous snapshot)
    settings: str  # `incremental.fingerprint` of the tenant


@dataclass(frozen=True)
class KeptPlan:
    """A plan read back from staging, with what the loads need besides it."""

    plan: Plan  # the frames of the asking load (`UPSERT_FRAMES` / `ARCHIVE_FRAMES`); the others empty
    basis: dict[str, Any]
    participants: frozenset[str] | None
    record: pd.DataFrame | None  # the record rows `incremental.record_rows` gave (None: only_user)


class PlanStore:
    """Kept plans of one staging database (all tenants)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as connection:
            metadata.create_all(connection, checkfirst=True)

    def save(
        self,
        tenant: str,
        run_id: str,
        key: PlanKey,
        plan: Plan,
        basis: Mapping[str, Any],
        participants: frozenset[str] | None,
        record: pd.DataFrame | None,
    ) -> None:
        """Keep the run's plan (replacing an earlier one of the run) and drop the tenant's oldest."""
        now = datetime.now(UTC)
        meta = {
            "key": asdict(key),
            "applied_mark": None,
            "basis": dict(basis),
            "participants": sorted(participants) if participants is not None else None,
            "always_fields": list(plan.always_fields),
            "has_record": record is not None,
            "frames": {name: _head(getattr(plan, name)) for name in PLAN_FRAMES},
        }
        parts: list[tuple[str, str]] = [("key", json.dumps(meta)), ("findings", _json(json_ready(plan.findings)))]
        for name in PLAN_FRAMES:
            parts += [(f"{name}:{n:05d}", text) for n, text in enumerate(frame_parts(getattr(plan, name)))]
        if record is not None:
            parts += [(f"record:{n:05d}", text) for n, text in enumerate(frame_parts(record))]
        with self.engine.begin() as connection:
            connection.execute(delete(run_plans).where(run_plans.c.tenant == tenant, run_plans.c.run_id == run_id))
            for part, payload in parts:
                connection.execute(
                    insert(run_plans).values(tenant=tenant, run_id=run_id, part=part, payload=payload, saved_at=now)
                )
            self._drop_oldest(connection, tenant, run_id)

    def load(self, tenant: str, run_id: str, key: PlanKey, after_upserts: bool) -> KeptPlan | None:
        """The kept plan when `key` (read now) is the key it was computed from; None: plan again.

        `after_upserts`: asked by ``load_archives``, whose Frankli mark must be the one
        ``load_upserts`` left after applying this plan; it reads the archives and the record
        rows, ``load_upserts`` the other frames (the frames a load does not apply come back
        empty, with their columns and dtypes).
        """
        meta = self._meta(tenant, run_id)
        if meta is None:
            return None
        expected = dict(meta["key"])
        if after_upserts:
            expected["frankli_mark"] = meta["applied_mark"]
        if expected != asdict(key):
            return None
        heads = meta.get("frames")  # None: kept by a version that did not store them; read every frame
        wanted = (ARCHIVE_FRAMES if after_upserts else UPSERT_FRAMES) if heads else PLAN_FRAMES
        with_record = after_upserts and meta["has_record"]
        parts = [*wanted, "record"] if with_record else list(wanted)
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(run_plans.c.part, run_plans.c.payload)
                .where(
                    run_plans.c.tenant == tenant,
                    run_plans.c.run_id == run_id,
                    or_(*(run_plans.c.part.like(f"{name}:%") for name in parts)),
                )
                .order_by(run_plans.c.part)
            ).all()
            findings = connection.execute(
                select(run_plans.c.payload).where(
                    run_plans.c.tenant == tenant, run_plans.c.run_id == run_id, run_plans.c.part == "findings"
                )
            ).scalar_one()
        texts: dict[str, list[str]] = {}
        for part, payload in rows:
            texts.setdefault(part.split(":")[0], []).append(payload)
        frames = {n: frame_from_parts(texts[n]) if n in wanted else _empty(heads[n]) for n in PLAN_FRAMES}
        plan = Plan(**frames, findings=json.loads(findings), always_fields=tuple(meta["always_fields"]))
        participants = meta["participants"]
        return KeptPlan(
            plan=plan,
            basis=meta["basis"],
            participants=frozenset(participants) if participants is not None else None,
            record=frame_from_parts(texts["record"]) if with_record else None,
        )

    def applied(self, tenant: str, run_id: str, mark: str | None) -> None:
        """``load_upserts`` applied the kept plan and left Frankli at `mark` (None: it applied another plan)."""
        meta = self._meta(tenant, run_id)
        if meta is None:
            return
        meta["applied_mark"] = mark
        with self.engine.begin() as connection:
            connection.execute(
                update(run_plans)
                .where(run_plans.c.tenant == tenant, run_plans.c.run_id == run_id, run_plans.c.part == "key")
                .values(payload=json.dumps(meta))
            )

    def _meta(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            text = connection.execute(
                select(run_plans.c.payload).where(
                    run_plans.c.tenant == tenant, run_plans.c.run_id == run_id, run_plans.c.part == "key"
                )
            ).scalar_one_or_none()
        return json.loads(text) if text is not None else None

    @staticmethod
    def _drop_oldest(connection: Any, tenant: str, run_id: str) -> None:
        newest = (
            select(run_plans.c.run_id)
            .where(run_plans.c.tenant == tenant, run_plans.c.part == "key", run_plans.c.run_id != run_id)
            .order_by(run_plans.c.saved_at.desc())
            .limit(KEEP_PLANS)
        )
        kept = set(connection.execute(newest).scalars()) | {run_id}
        runs = set(
            connection.execute(
                select(run_plans.c.run_id).where(run_plans.c.tenant == tenant).group_by(run_plans.c.run_id)
            ).scalars()
        )
        for old in sorted(runs - kept):
            connection.execute(delete(run_plans).where(run_plans.c.tenant == tenant, run_plans.c.run_id == old))


_NOT_JSON = {
    "datetime64",
    "datetime",
    "date",
    "time",
    "timedelta64",
    "timedelta",
    "decimal",
    "period",
    "interval",
    "bytes",
}
_NOT_JSON_TYPES = (datetime, date, time, timedelta, Decimal, bytes)


def frame_parts(frame: pd.DataFrame) -> Iterator[str]:
    """`frame` as JSON texts of up to `PART_ROWS` rows, each with the columns and their dtypes."""
    for column in frame.columns:  # JSON would bring these back as text: refused, as the standard library does
        kind = pd.api.types.infer_dtype(frame[column], skipna=True)
        mixed = kind.startswith("mixed") and any(isinstance(v, _NOT_JSON_TYPES) for v in frame[column])
        if kind in _NOT_JSON or mixed:
            raise TypeError(f"a plan value cannot be kept in staging: column {column} holds {kind} values")
    head = _head(frame)
    values = frame.astype(object).where(frame.notna(), None).to_numpy(dtype=object).tolist()
    for start in range(0, max(len(values), 1), PART_ROWS):
        yield _json({**head, "rows": values[start : start + PART_ROWS]})


def _head(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in frame.columns], "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()}}


def _empty(head: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(columns=head["columns"], dtype=object).astype(head["dtypes"])


def frame_from_parts(texts: list[str]) -> pd.DataFrame:
    """The frame `frame_parts` wrote (missing values as the dtype's missing value)."""
    documents = json_text.loads_many(texts)
    columns, dtypes = documents[0]["columns"], documents[0]["dtypes"]
    rows = [row for document in documents for row in document["rows"]]
    frame = pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(columns=columns, dtype=object)
    return frame.astype(dtypes)


def _json(value: Any) -> str:
    try:
        return json_text.dumps(value)
    except TypeError as error:
        raise TypeError(f"a plan value cannot be kept in staging: {error}") from None
