"""What the pipeline asks of a Frankli target, whichever it is (the database today, the SCIM API next).

A sink opens one session per task on one organisation. Inside it the organisation is locked
against every other load, and what the session reads and writes is one transaction: the
pipeline plans against what `FrankliSession.state` read, applies the plan with
`apply_upserts` / `apply_archives`, and proves with `mark` that nothing was written between
its reads and its writes. Leaving the session commits; an exception, or `discard`, keeps
nothing. The pipeline speaks to this interface only (`sinks.open_sink` gives a tenant's sink).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from frankli_sync.errors import SyncStopped
from frankli_sync.plan import FrankliState, Plan


@dataclass(frozen=True)
class AuditEntry:
    """One audited action on one user (the quarantine included: written although nothing changed)."""

    external_id: str | None
    email: str | None
    action: str
    details: dict[str, Any]


class OrganisationOwnedElsewhere(SyncStopped):
    """The organisation is synced from another source; this run must not write to it."""

    def __init__(self, organisation: str, recorded: str, incoming: str, where: str = "") -> None:
        self.organisation, self.recorded, self.incoming = organisation, recorded, incoming
        # Where the owner is recorded, for the one who may move it (the database's own organisations table).
        self.where = where or f"organisations.source of {organisation!r} in Frankli's database"
        super().__init__(
            f"Frankli organisation {organisation!r} is synced from {recorded!r}; this run reads {incoming!r}. "
            "Nothing was written."
        )


class FrankliSession(Protocol):
    """One organisation, locked, inside one transaction of its sink."""

    def mark(self) -> str:
        """A digest that changes whenever anything is written to the organisation's users or entities."""
        ...

    def state(self) -> FrankliState:
        """The organisation's users and entities, whole (what a full plan is computed against)."""
        ...

    def state_of(self, external_ids: Iterable[str], email_keys: Iterable[str]) -> FrankliState:
        """The part of the organisation an incremental plan needs (the same matches as `state`)."""
        ...

    def applied_snapshot(self) -> datetime | None:
        """The instant of the newest Entra snapshot applied to the organisation, if any."""
        ...

    def record_applied_snapshot(self, snapshot_at: datetime) -> None: ...

    def apply_upserts(
        self, plan: Plan, run_id: str, now: datetime, quarantined: Iterable[AuditEntry] = ()
    ) -> dict[str, int]:
        """Create entities; create, link, update and restore users; set managers; audit each action."""
        ...

    def apply_archives(self, archives: pd.DataFrame, run_id: str, now: datetime) -> int:
        """Archive these users (their status kept for a restore) and audit it; the number archived."""
        ...

    def synced_users(self) -> int:
        """Users of the organisation the sync manages (linked to an Entra object) and not archived."""
        ...

    def refused_writes(self, run_id: str) -> int:
        """Writes of this run the target refused (audited ``failed``; a target that writes all or nothing: 0)."""
        ...

    def audit_counts(self, run_id: str) -> dict[str, int]: ...

    def audit_rows(self, run_id: str, actions: Iterable[str]) -> pd.DataFrame:
        """The run's audit entries of these actions, in the order written (external_id, email, action, details)."""
        ...

    def people_of(self, external_ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        """Name and address of the organisation's users with these object ids."""
        ...

    def discard(self) -> None:
        """Keep nothing this session wrote (planning and reporting only read)."""
        ...


class FrankliSink(Protocol):
    """A Frankli target of one tenant."""

    kind: str
    # Whether a run with nothing changed in Entra still reads the organisation's mark, to see an edit made in
    # Frankli at once: the database's one query, yes; a SCIM endpoint's requests, no (the next run with a
    # change in Entra, or a full read, sees it). `incremental.Basis.quiet`.
    reads_when_nothing_changed: bool

    def session(self, organisation: str, source: str | None) -> AbstractContextManager[FrankliSession]:
        """The organisation locked and in one transaction; `source` is checked against the one it records
        (an organisation synced from another raises `OrganisationOwnedElsewhere`; None: not checked)."""
        ...

    def field_lengths(self, mapping: Mapping[str, Any]) -> dict[str, int]:
        """Staged column -> the most characters the target can hold of it (validation quarantines longer)."""
        ...
