"""GET /health for load balancers: 200 when the metadata database answers, 503 when not."""

from __future__ import annotations

from rosetta_web import __version__, create_app

from .pg import free_port


def test_health_ok_without_login(client):
    """Health answers without sign-in, with its documented fields and the database check."""
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "ok" and body["version"] == __version__
    assert body["timestamp"].endswith("Z")
    assert body["checks"]["database"]["status"] == "ok"


def test_health_503_when_the_database_is_down():
    """With the metadata database unreachable, health answers 503 quickly, naming no DSN."""
    url = f"postgresql+psycopg2://rosetta:S3cret-pw@127.0.0.1:{free_port()}/meta"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    response = app.test_client().get("/health")
    body = response.get_json()
    assert response.status_code == 503
    assert body["status"] == "error" and body["checks"]["database"]["status"] == "error"
    assert "S3cret-pw" not in response.get_data(as_text=True)
