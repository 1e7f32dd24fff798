"""Where Entra users are read from (Microsoft Graph, or the admin center's CSV export), page by page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class UserPage:
    """One page of users, whichever source read it: what `Staging.apply_page` stages as one transaction."""

    rows: list[dict[str, Any]]  # staging rows of users present (new or changed)
    removed: dict[str, str] = field(default_factory=dict)  # object id -> "deleted" | "changed" (delta reads)
    next_link: str | None = None  # where a retried read resumes after this page (Graph)
    delta_link: str | None = None  # on a delta read's last page: where the next run's read starts (Graph)
