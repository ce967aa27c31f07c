"""Destination pages in the browser."""

from __future__ import annotations

from rosetta_web.extensions import db as _db
from rosetta_web.models import Destination

from .seed import DESTINATION, PASSPHRASE


def test_create_edit_delete_destination(browser, app):
    """A destination is created with its passphrase encrypted, edited keeping it, then deleted."""
    response = browser.post(
        "/destinations/new", {**DESTINATION, "snowflake_private_key_passphrase": PASSPHRASE}
    )
    assert response.status_code == 303
    # <wbr>: the name may break at its dot on a phone, and reads the same.
    listing = browser.get("/destinations/").get_data(as_text=True).replace("<wbr>", "")
    assert "snowflake-production" in listing and "ANALYTICS.RAW_DATA" in listing
    edit = browser.get("/destinations/1/edit").get_data(as_text=True)
    assert 'value="xy12345.us-east-1"' in edit and PASSPHRASE not in edit
    browser.post("/destinations/1/edit", {**DESTINATION, "snowflake_warehouse": "LOAD_WH"})
    with app.app_context():
        destination = _db.session.get(Destination, 1)
        assert destination.snowflake_warehouse == "LOAD_WH"
        assert destination.snowflake_private_key_passphrase == PASSPHRASE
    assert browser.post("/destinations/1/delete").status_code == 303
    with app.app_context():
        assert _db.session.scalar(_db.select(_db.func.count(Destination.id))) == 0


def test_destination_errors_beside_fields(browser):
    """Missing required fields and a malformed account come back marked, with the input kept."""
    data = {
        **DESTINATION,
        "snowflake_account": "xy 12345",
        "snowflake_user": "",
        "snowflake_host": "",
    }
    html = browser.post("/destinations/new", data).get_data(as_text=True)
    assert "Use the account identifier, e.g. xy12345.us-east-1." in html
    assert html.count("This field is required.") == 1
    assert 'value="xy 12345"' in html and 'value="ANALYTICS"' in html


def test_optional_fields_are_stored_empty_as_null(browser, app):
    """Leaving role, warehouse and host blank stores NULL, not an empty string."""
    data = {**DESTINATION, "snowflake_role": "", "snowflake_host": ""}
    assert browser.post("/destinations/new", data).status_code == 303
    with app.app_context():
        destination = _db.session.get(Destination, 1)
        assert (destination.snowflake_role, destination.snowflake_host) == (None, None)
        assert destination.snowflake_private_key_passphrase is None
