"""Fuzz the JSON API against its own OpenAPI document with schemathesis, every check on.

schemathesis' own runner, all its phases (examples, coverage, fuzzing, stateful), against
the app served over real HTTP, on each metadata database: what PostgreSQL refuses, SQLite
may store, and the other way round. A short run in `make test`; `make fuzz` sets
ROSETTA_FUZZ_EXAMPLES for a long one. schemathesis.toml lists the statuses a valid request
may still get where the document cannot say why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from rosetta_web.auth import services

from .constants import ROOT
from .factories import PASSWORD, add_alert, seed_alerting
from .pg import free_port
from .seed import DESTINATION, SOURCE

pytestmark = pytest.mark.slow

EXAMPLES = os.environ.get("ROSETTA_FUZZ_EXAMPLES", "10")


@pytest.fixture(params=["app", "sqlite_app"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """The app on each metadata database, served over HTTP, with a source, a destination,
    alerts (one firing, one resolved), a channel with a delivery and a token; yield its base
    URL and the token."""
    app = request.getfixturevalue(request.param)
    with app.app_context():
        _, token = services.create_token(services.create_user("fuzzer", PASSWORD, "admin"), "fuzz")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/sources", json=SOURCE, headers=headers).status_code == 201
    assert client.post("/api/v1/destinations", json=DESTINATION, headers=headers).status_code == 201
    seed_alerting(app, 1)
    add_alert(app, 1, state="resolved")
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", token
    server.shutdown()
    thread.join(timeout=5)


def test_api_answers_as_its_document_says(served: tuple[str, str], tmp_path: Path) -> None:
    """Every operation, fed valid and invalid input and called in sequences, answers as its
    document says: no 5xx, documented statuses, bodies and headers, valid input accepted,
    invalid input refused, a deleted entity gone."""
    base_url, token = served
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base_url}/api/v1/openapi.json",
            "--url",
            base_url,
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            EXAMPLES,
            # The short run is the same every time; a long one explores further each run.
            *(["--generation-deterministic"] if "ROSETTA_FUZZ_EXAMPLES" not in os.environ else []),
            "--report",
            "ndjson",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=ROOT,  # schemathesis.toml
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = run.stdout[-6000:] + run.stderr[-2000:]
    print(summary)
    assert run.returncode == 0, summary
    tested = re.search(r"Tested: (\d+)", run.stdout)
    # Every API operation but POST /channels/{id}/test (see schemathesis.toml).
    assert tested and int(tested[1]) >= 41, "every API operation is fuzzed"
