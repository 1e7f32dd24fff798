"""Extraction throughput and peak memory against the Graph emulator (issue #4's figures).

For each size: a full read (``/users/delta`` from scratch, managers included,
999 per page) into a SQLite staging snapshot, then the day-2 change set and a
delta read; and, for comparison, the other way to get managers in one pass:
``/users?$expand=manager`` (Graph caps those pages at 100). Each measurement
runs in a fresh child process so its peak RSS is its own.

    .venv/bin/python scripts/bench_extract.py --users 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BIN, REPO, start_emulator

RESULTS = REPO / "benchmarks" / "extraction.md"


def child(mode: str, base_url: str, workdir: str) -> None:
    """Runs in the child: one measurement, printed as JSON."""
    os.environ["AIRFLOW_CONN_MSGRAPH_BENCH"] = json.dumps(
        {
            "conn_type": "msgraph",
            "login": "bench",
            "password": "bench",
            "extra": {"tenant_id": "bench", "base_url": base_url, "allowed_hosts": "graph.microsoft.com"},
        }
    )
    import logging

    logging.disable(logging.INFO)
    from frankli_sync.config import parse_config
    from frankli_sync.connections import make_engine
    from frankli_sync.extraction import extract_users
    from frankli_sync.staging import Staging

    config = parse_config(
        {
            "tenants": [
                {
                    "name": "bench",
                    "source": {"kind": "graph", "conn_id": "msgraph_bench"},
                    "target": {"kind": "database", "conn_id": "unused", "organisation": "Bench"},
                }
            ]
        }
    )
    tenant = config.tenants[0]
    started = time.monotonic()
    if mode == "expand":
        import asyncio

        from frankli_sync.entra import GRAPH_SELECT
        from frankli_sync.sources.graph import GraphClient

        async def read() -> int:
            client = GraphClient("msgraph_bench")
            query = {"$select": ",".join(GRAPH_SELECT), "$top": "999", "$expand": "manager($select=id)"}
            body, total = await client.get("users", query=query), 0
            while True:
                total += len(body["value"])
                if not body.get("@odata.nextLink"):
                    await client.close()
                    return total
                body = await client.get(body["@odata.nextLink"])

        users, summary = asyncio.run(read()), {}
    else:
        staging = Staging(make_engine(f"sqlite:///{workdir}/staging.db"))
        summary = extract_users(staging, tenant, f"run-{mode}", full_sync=(mode == "full"))
        users = summary["users"]
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"mode": mode, "users": users, "seconds": seconds, "peak_rss_mib": peak, **summary}))


def measure(mode: str, base_url: str, workdir: str) -> dict:
    output = subprocess.run(
        [str(BIN / "python"), __file__, "--child", mode, base_url, workdir],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000])
    options = parser.parse_args()
    lines = []
    for users in options.users:
        emulator, base_url = start_emulator(users, seed=42)
        try:
            with tempfile.TemporaryDirectory() as workdir:
                results = [measure("full", base_url, workdir), measure("expand", base_url, workdir)]
                urllib.request.urlopen(
                    urllib.request.Request(base_url.replace("/v1.0", "/_emulator/day2"), data=b"{}", method="POST"),
                    timeout=600,
                ).read()
                results.append(measure("delta", base_url, workdir))
        finally:
            emulator.terminate()
            emulator.wait(timeout=60)
        for result in results:
            rate = result["users"] / result["seconds"] if result["seconds"] else 0
            print(json.dumps(result))
            lines.append(
                f"| {users:,} | {result['mode']} | {result['users']:,} | {result['seconds']:.1f} | {rate:,.0f} "
                f"| {result['peak_rss_mib']} |"
            )
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Extraction benchmark\n\n`scripts/bench_extract.py`: Graph emulator on localhost, 2 cores. "
            "full = `/users/delta` from scratch (999/page, managers via `manager@delta`) into SQLite staging; "
            "expand = `/users?$expand=manager` read only (100/page, no staging); delta = the day-2 changes "
            "applied to a copy of the last snapshot (users = the resulting snapshot).\n\n"
            "| tenant | read | users | seconds | users/s | peak RSS MiB |\n|---|---|---|---|---|---|\n"
        )
    with RESULTS.open("a") as out:
        out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
