"""Test clients that act as a browser (forms with their CSRF token) or a script (a token)."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import event

from .factories import PASSWORD


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """Read the CSRF token a page hands the browser."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, username: str = "alice", password: str = PASSWORD) -> Any:
    """Post the sign-in form the way a browser does."""
    token = csrf_token(client)
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )


class Browser:
    """A test client signed in as an operator, posting forms with their CSRF token."""

    def __init__(self, client: FlaskClient, page: str = "/sources/") -> None:
        self.client = client
        self.token = csrf_token(client, page)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kwargs)


class Api:
    """A client that calls the API with a bearer token, as a script would."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.client, method)

        def request(path: str, **kwargs: Any) -> Any:
            return call(path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

        return request


class QueryCounter:
    """Count the SQL statements an engine runs while it is active."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> QueryCounter:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


# Elements wider than the viewport, named, so a failure says which one overflows.
OVERFLOW_JS = """
() => Array.from(document.querySelectorAll('body *'))
  .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
  .filter((el) => !el.closest('.table-scroll, table'))
  .map((el) => {
    const names = typeof el.className === 'string' ? el.className.split(/\\s+/) : [];
    const classes = names.filter(Boolean);
    return [el.tagName.toLowerCase() + (el.id ? '#' + el.id : ''), ...classes].join('.');
  })
"""
