"""Stop the metadata database for 20 s under load and count what clients get, and the log lines.

Run by hand from the repository root (it starts its own PostgreSQL cluster):

    .venv/bin/python bench/outage.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.auth import services  # noqa: E402
from tests.pg import Cluster, free_port  # noqa: E402

PATHS = ("/api/v1/sources", "/api/v1/summary", "/metrics", "/", "/health")


class Lines(logging.Handler):
    """Keep every log record at WARNING or above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    cluster = Cluster("bench-outage").start()
    try:
        url = cluster.create_database("meta")
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "WAL_MONITOR_ENABLED": False})
        with app.app_context():
            upgrade()
            _, token = services.create_token(services.create_user("bench", "bench-password"), "b")
        lines = Lines()
        logging.getLogger().addHandler(lines)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the access log
        port = free_port()
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        phase = ["before"]
        counts: dict[str, Counter[str]] = {"before": Counter(), "outage": Counter()}
        counts["after"] = Counter()
        retry_after: Counter[str] = Counter()
        stop = threading.Event()

        def client(n: int) -> None:
            i = n
            while not stop.is_set():
                path = PATHS[i % len(PATHS)]
                i += 1
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}{path}",
                    headers={"Authorization": f"Bearer {token}", "Accept": "text/html"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=15) as response:
                        status = response.status
                except urllib.error.HTTPError as error:
                    status = error.code
                    if status == 503 and error.headers.get("Retry-After"):
                        retry_after[phase[0]] += 1
                except OSError:
                    status = 0
                counts[phase[0]][str(status)] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        phase[0] = "outage"
        cluster.halt()
        time.sleep(args.outage)
        cluster.resume()
        phase[0] = "after"
        time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join()
        server.shutdown()

        for name in ("before", "outage", "after"):
            total = sum(counts[name].values())
            by_status = ", ".join(f"{status}: {n}" for status, n in sorted(counts[name].items()))
            print(f"{name}: {total} requests ({by_status})")
        print(f"503 answers with Retry-After during the outage: {retry_after['outage']}")
        tracebacks = sum(1 for record in lines.records if record.exc_info)
        print(f"log lines at WARNING or above: {len(lines.records)} ({tracebacks} tracebacks)")
        for record in lines.records:
            print(f"  {record.levelname} {record.name}: {record.getMessage()}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
