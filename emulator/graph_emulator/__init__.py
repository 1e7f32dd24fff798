"""A local Microsoft Graph emulator: a generated Entra ID tenant served over real HTTP.

Lets the sync pipeline be developed, demoed and tested end to end without a Microsoft
tenant: `generate_tenant` builds reproducible users, `apply_day2` scripts a day of
churn, and `GraphEmulator` serves them as Graph v1.0 /users, /users/delta and /groups,
optionally failing on purpose as a `FaultPlan` scripts.
"""

from __future__ import annotations

from graph_emulator.faults import FaultPlan, FaultRule
from graph_emulator.server import GraphEmulator
from graph_emulator.store import Tenant
from graph_emulator.tenant import ChangeSet, apply_day2, generate_tenant

__all__ = ["ChangeSet", "FaultPlan", "FaultRule", "GraphEmulator", "Tenant", "apply_day2", "generate_tenant"]
