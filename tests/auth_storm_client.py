"""A storm of wrong basic-auth passwords: many threads, each sending one request per connection, until a stop file appears.

Run by ``test_auth_storm.py`` in a process of its own (standard library only)::

    python auth_storm_client.py HOST PORT --ca CA --user prometheus --threads 200 --stop-file PATH

Prints, as JSON, how many answers of each status it got and how many connections were refused
or cut ("refused"). Every password differs, so no answer can come from a cache.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import sys
import threading
from collections import Counter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--user", default="prometheus")
    ap.add_argument("--threads", type=int, default=200)
    ap.add_argument("--stop-file", required=True)
    args = ap.parse_args(argv)
    ctx = ssl.create_default_context(cafile=args.ca)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(k: int) -> None:
        n = 0
        while not os.path.exists(args.stop_file):
            n += 1
            token = base64.b64encode(f"{args.user}:wrong-{k}-{n}".encode()).decode()
            conn = http.client.HTTPSConnection(args.host, args.port, context=ctx, timeout=60)
            try:
                conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
                response = conn.getresponse()
                response.read()
                result = str(response.status)
            except (OSError, http.client.HTTPException):
                result = "refused"
            finally:
                conn.close()
            with lock:
                counts[result] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(dict(counts), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
