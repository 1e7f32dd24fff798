"""`python -m scim_test_server [--port N]`: the test SCIM server in a process of its own (benchmarks)."""

from __future__ import annotations

import argparse
import time

from scim_test_server import TOKEN, ScimTestServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=TOKEN)
    options = parser.parse_args()
    server = ScimTestServer(options.token, options.port).start()
    print(f"SCIM test server listening on {server.base_url} (token {server.token})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
