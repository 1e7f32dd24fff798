"""Measure the emulator at scale: `python -m graph_emulator.bench --users 1000000`.

Starts the CLI in a subprocess (so its memory is measured alone), times startup
(generation included), then reads every user as a sync would — urllib, $top=999,
about 20 $select-ed properties, following absolute nextLinks — and does the same
through /users/delta and a nested group's transitiveMembers. Reports the emulator's
resident memory (VmRSS/VmHWM from /proc, so Linux only) and CPU time at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SELECT = (
    "id,userPrincipalName,mail,displayName,givenName,surname,jobTitle,department,officeLocation,"
    "companyName,employeeId,streetAddress,city,postalCode,country,usageLocation,businessPhones,"
    "mobilePhone,employeeHireDate,accountEnabled,userType"
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - our own local emulator
        return json.loads(response.read())


def _read_all(url: str, final_link: str = "@odata.nextLink") -> tuple[int, int, float]:
    """(items, pages, seconds) following nextLinks until none is left."""
    start, items, pages = time.perf_counter(), 0, 0
    next_url: str | None = url
    while next_url:
        page = _get(next_url)
        items += len(page["value"])
        pages += 1
        next_url = page.get("@odata.nextLink")
    return items, pages, time.perf_counter() - start


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024  # kB -> MB
    return fields


def _cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(parts[11]) + int(parts[12])  # utime + stime
    return ticks / 100.0


def run(users: int, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "graph_emulator", "--users", str(users), "--seed", str(seed), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        ready = time.perf_counter() - start
        base = line.split(" listening on ", 1)[1].split(" ", 1)[0]
        result: dict[str, Any] = {"users": users, "startup_seconds_incl_generation": round(ready, 2)}
        result["cpu_seconds_at_startup"] = _cpu_seconds(process.pid)
        result["memory_mb_after_startup"] = _memory(process.pid)
        items, pages, seconds = _read_all(f"{base}/users?$top=999&$select={SELECT}")
        result["users_read"] = {"items": items, "pages": pages, "seconds": round(seconds, 2)}
        items, pages, seconds = _read_all(f"{base}/users/delta?$top=999&$select={SELECT}")
        result["delta_initial_sync"] = {"items": items, "pages": pages, "seconds": round(seconds, 2)}
        groups = _get(f"{base}/groups?$select=id,displayName")["value"]
        all_staff = next(g["id"] for g in groups if g["displayName"] == "All Staff")
        members = f"{base}/groups/{all_staff}/transitiveMembers/microsoft.graph.user?$top=999&$select={SELECT}"
        items, pages, seconds = _read_all(members)
        result["transitive_members_all_staff"] = {"items": items, "pages": pages, "seconds": round(seconds, 2)}
        result["memory_mb_at_end"] = _memory(process.pid)
        result["emulator_cpu_seconds_total"] = _cpu_seconds(process.pid)
        return result
    finally:
        process.terminate()
        process.wait(timeout=60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graph_emulator.bench", description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000], help="tenant sizes to measure")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    for users in args.users:
        print(json.dumps(run(users, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
