"""The /_emulator/* endpoints: not Graph; they drive demos and tests from outside the process.

- POST   /_emulator/day2                   apply the scripted day-2 churn ({"seed": n, "share": 0.01} optional;
                                           share: the part of the tenant to change, default day 2's ~6.9%)
- GET    /_emulator/stats                  users, groups, requests, faults injected
- GET    /_emulator/faults                 the current fault plan (null when none)
- POST   /_emulator/faults                 set a fault plan (FaultPlan JSON)
- DELETE /_emulator/faults                 clear it
- POST   /_emulator/expire-delta-tokens    make every delta token handed out so far answer 410
- GET    /_emulator/delta-token-max-age    {"seconds": ...}
- PUT    /_emulator/delta-token-max-age    set it: {"seconds": 3600}
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from graph_emulator.errors import bad_request
from graph_emulator.faults import FaultPlan
from graph_emulator.tenant import apply_day2

if TYPE_CHECKING:
    from graph_emulator.server import GraphEmulator


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else {}
    except json.JSONDecodeError as error:
        raise bad_request(f"Body is not JSON: {error}") from error


def day2(emulator: GraphEmulator, body: bytes) -> dict[str, Any]:
    options = _json_body(body)
    seed = options.get("seed", 2) if isinstance(options, dict) else None
    share = options.get("share") if isinstance(options, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise bad_request('Body must be {"seed": <integer>, "share": <0..1>} or empty.')
    if share is not None and (isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1):
        raise bad_request('"share" must be a number above 0 and at most 1 (the part of the tenant to change).')
    try:
        return apply_day2(emulator.tenant, seed=seed, share=share).to_dict()
    except ValueError as error:
        raise bad_request(str(error)) from error


def get_faults(emulator: GraphEmulator) -> dict[str, Any]:
    plan = emulator.faults
    return {"plan": plan.to_dict() if plan is not None else None, **emulator.fault_stats()}


def set_faults(emulator: GraphEmulator, body: bytes) -> dict[str, Any]:
    try:
        plan = FaultPlan.from_dict(_json_body(body))
    except (ValueError, TypeError) as error:
        raise bad_request(f"Invalid fault plan: {error}") from error
    emulator.faults = plan
    return get_faults(emulator)


def clear_faults(emulator: GraphEmulator) -> dict[str, Any]:
    emulator.faults = None
    return get_faults(emulator)


def expire_delta_tokens(emulator: GraphEmulator) -> dict[str, Any]:
    return {"epoch": emulator.expire_delta_tokens()}


def get_max_age(emulator: GraphEmulator) -> dict[str, Any]:
    return {"seconds": emulator.delta_token_max_age.total_seconds()}


def set_max_age(emulator: GraphEmulator, body: bytes) -> dict[str, Any]:
    options = _json_body(body)
    seconds = options.get("seconds") if isinstance(options, dict) else None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise bad_request('Body must be {"seconds": <non-negative number>}.')
    emulator.delta_token_max_age = timedelta(seconds=seconds)
    return get_max_age(emulator)
