"""In a real Chromium: a viewer reads the lists and pages with no button to change anything;
an admin changes a role and finds it in the audit log."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from rosetta_web.auth import services

from ..clients import Api
from ..factories import PASSWORD, create_operator
from ..seed import DESTINATION, PIPELINE, SOURCE

pytestmark = pytest.mark.slow


def test_a_viewer_sees_no_button_to_change_anything(app, live_server, page, sign_in):
    """Sources, a source's page and the pipelines list, as a viewer: the figures and no New,
    Edit, Delete, Sample now, Check or status buttons."""
    with app.app_context():
        token = services.create_token(services.create_user("root", PASSWORD, "admin"), "seed")[1]
    admin = Api(app.test_client(), token)
    assert admin.post("/api/v1/sources", json=SOURCE).status_code == 201
    assert admin.post("/api/v1/destinations", json=DESTINATION).status_code == 201
    assert admin.post("/api/v1/pipelines", json={**PIPELINE, "status": "PAUSE"}).status_code == 201
    create_operator(app, "vic", role="viewer")
    sign_in("vic")

    page.goto(live_server + "/sources/")
    expect(page.locator("#sources-table")).to_contain_text(SOURCE["name"])
    expect(page.get_by_role("link", name="New source")).to_have_count(0)
    expect(page.locator("#sources-table td.actions a")).to_have_count(0)
    page.goto(live_server + "/sources/1")
    expect(page.locator("#readiness")).to_contain_text("not ready")
    expect(page.get_by_role("button")).to_have_text(["Sign out"])
    page.goto(live_server + "/pipelines/")
    expect(page.locator("#pipeline-1 .status-cell .badge")).to_have_text("PAUSE")
    expect(page.locator("#pipeline-1 button")).to_have_count(0)
    page.goto(live_server + "/account")
    expect(page.locator("#account-role")).to_have_text("viewer")


def test_an_admin_changes_an_accounts_role(app, live_server, page, sign_in):
    """On /accounts an admin picks a new role for an account and sets it; the page shows it,
    the account's next request has that role, and the account's history in the audit log
    says who changed what; the log filters in place and names a bad filter beside it."""
    create_operator(app, "ada", role="admin")
    create_operator(app, "vic", role="viewer")
    with app.app_context():
        vic_id = services.find_user("vic").id
    sign_in("ada")
    page.click("header >> text=Accounts")
    expect(page.locator("h1")).to_have_text("Accounts")
    row = page.locator(f"#account-{vic_id}")
    expect(row.locator("select")).to_have_value("viewer")
    row.locator("select").select_option("operator")
    row.locator(f"#set-role-{vic_id}").click()
    expect(page.locator(".flash-success")).to_have_text("vic is now operator.")
    expect(page.locator(f"#account-{vic_id} select")).to_have_value("operator")
    with app.app_context():
        assert services.find_user("vic").role == "operator"
    # Who did it: the account's history in the audit log, then the log filtered in place.
    row.locator(f"#history-{vic_id}").click()
    expect(page.locator("h1")).to_have_text("Audit log")
    first = page.locator("#audit-table tbody tr").first
    expect(first.locator(".cell-title")).to_have_text("set_role")
    expect(first.locator(".cell-actor")).to_contain_text("ada")
    expect(first.locator(".cell-changes")).to_have_text("role: viewer → operator")
    expect(page.locator("#audit-table tbody tr")).to_have_count(2)  # the create, the change
    page.goto(live_server + "/audit/")
    page.locator("#audit-action").select_option("sign_in")
    expect(page.locator("#audit-table tbody tr")).to_have_count(1)
    expect(page).to_have_url(live_server + "/audit/?action=sign_in")
    page.fill("#audit-since", "yesterday")
    page.press("#audit-since", "Enter")
    expect(page.locator("#audit-since-error")).to_contain_text("ISO-8601")
    expect(page.locator("#audit-since")).to_have_value("yesterday")
