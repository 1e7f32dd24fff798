"""Run the emulator from a shell: `python -m graph_emulator --users 3000 --seed 42 --port 8765`.

Prints one line once it is listening (scripts wait for it) and serves until SIGTERM or
SIGINT, then exits 0 so process supervisors see a clean stop. `--faults plan.json`
starts with a fault plan (the FaultPlan JSON that POST /_emulator/faults takes) and
`--delta-token-max-age` shortens delta token life to exercise the 410 resync path.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType

from graph_emulator.delta import DEFAULT_MAX_AGE
from graph_emulator.faults import FaultPlan
from graph_emulator.server import GraphEmulator
from graph_emulator.tenant import generate_tenant


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m graph_emulator", description=__doc__)
    parser.add_argument("--users", type=int, default=3000, help="number of users to generate")
    parser.add_argument("--seed", type=int, default=42, help="seed for the generated tenant")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--domain", default="contoso.example", help="tenant domain for UPNs")
    parser.add_argument(
        "--delta-token-max-age",
        type=float,
        default=DEFAULT_MAX_AGE.total_seconds(),
        metavar="SECONDS",
        help="how long /users/delta tokens stay valid (default: 7 days, as in Graph)",
    )
    parser.add_argument("--faults", metavar="JSON_FILE", help="fault plan to start with (FaultPlan JSON)")
    args = parser.parse_args(argv)
    if args.delta_token_max_age < 0:
        parser.error("--delta-token-max-age cannot be negative")
    if args.faults is not None:
        try:
            args.faults = FaultPlan.from_json_file(args.faults)
        except (OSError, ValueError, TypeError) as error:
            parser.error(f"--faults {args.faults}: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    tenant = generate_tenant(args.users, seed=args.seed, domain=args.domain)
    emulator = GraphEmulator(
        tenant,
        host=args.host,
        port=args.port,
        delta_token_max_age=timedelta(seconds=args.delta_token_max_age),
        faults=args.faults,
    )
    with emulator:
        print(
            f"graph emulator listening on {emulator.base_url} ({args.users} users, seed {args.seed})",
            flush=True,
        )
        while not stop.is_set():
            stop.wait(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
