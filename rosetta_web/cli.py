"""Command-line tools: `flask users …`, `flask tokens …` and `flask rosetta …`."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import cast

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select
from werkzeug.datastructures import MultiDict
from werkzeug.local import LocalProxy

from .auth import services
from .auth.forms import TokenForm, UserForm
from .extensions import db
from .forms import filled
from .models import ROLES, ApiToken, User
from .timeutil import isoformat

users_cli = AppGroup("users", help="Manage accounts and their roles.")
tokens_cli = AppGroup("tokens", help="Manage API tokens for scripts.")
rosetta_cli = AppGroup(
    "rosetta", help="Run the WAL monitor and the engine; check, sample and verify."
)


def _user_or_fail(username: str) -> User:
    user = services.find_user(username)
    if user is None:
        raise click.ClickException(f"no operator named {username!r}")
    return user


ROLE_CHOICE = click.Choice(ROLES)


@users_cli.command("create")
@click.argument("username")
@click.option("--password", help="Omit to be prompted (twice) without echo.")
@click.option("--role", type=ROLE_CHOICE, default="operator", show_default=True)
def create_user(username: str, password: str | None, role: str) -> None:
    """Create an account: a viewer reads, an operator runs CDC, an admin manages too."""
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    form = UserForm(
        formdata=MultiDict({"username": username, "password": password, "confirm": password}),
        meta={"csrf": False},
    )
    if not form.validate():
        problems = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in form.errors.items())
        raise click.ClickException(problems)
    try:
        user = services.create_user(filled(form.username), filled(form.password), role)
    except services.AccountExists as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created {user.role} {user.username}.")


@users_cli.command("set-role")
@click.argument("username")
@click.argument("role", type=ROLE_CHOICE)
def set_role(username: str, role: str) -> None:
    """Give an account a role (the last enabled admin keeps theirs)."""
    try:
        user = services.set_role(_user_or_fail(username), role)
    except services.LastAdmin as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{user.username} is now {user.role}.")


@users_cli.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable an account: its sessions end and its API tokens are revoked."""
    user = _user_or_fail(username)
    try:
        revoked = services.disable_user(user)
    except services.LastAdmin as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Disabled {user.username}: signed out, {services.tokens_revoked_words(revoked)}.")


@tokens_cli.command("create")
@click.option("--user", "username", required=True, help="The operator the token acts as.")
@click.option("--name", required=True, help="What will use it, e.g. nightly-healthcheck.")
@click.option("--read-only", is_flag=True, help="It may read, and change nothing.")
def create_token(username: str, name: str, read_only: bool) -> None:
    """Create an API token; its secret is printed alone on the last line, once."""
    user = _user_or_fail(username)
    form = TokenForm(formdata=MultiDict({"name": name}), meta={"csrf": False})
    if not form.validate():
        raise click.ClickException(f"--name: {' '.join(form.name.errors)}")
    token, raw = services.create_token(user, filled(form.name), read_only)
    kind = "read-only token" if read_only else "token"
    click.echo(f"Created {kind} {token.name!r} (id {token.id}) for {user.username}. Store it now:")
    click.echo(raw)


@tokens_cli.command("list")
@click.option("--user", "username", required=True)
def list_tokens(username: str) -> None:
    """List an operator's API tokens (never their secrets)."""
    user = _user_or_fail(username)
    tokens = db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()
    for token in tokens:
        last_used = isoformat(token.last_used_at) or "never"
        access = "read-only" if token.read_only else "read-write"
        click.echo(f"{token.id}\t{token.name}\t{token.prefix}…\t{access}\tlast used {last_used}")


@tokens_cli.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke an API token by id."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise click.ClickException(f"no token with id {token_id}")
    services.revoke_token(token)
    click.echo(f"Revoked token {token.name!r}.")


def _bytes(value: int | None) -> str:
    return "-" if value is None else str(value)


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


@rosetta_cli.command("check")
@click.option("--source", "source_name", help="Check only this source (by name).")
def check(source_name: str | None) -> None:
    """Run every source's (or one's) readiness checks now, store and print them; exit 1 when
    a check fails."""
    from .sources.services import check_all

    results = check_all(source_name)
    if source_name and not results:
        raise click.ClickException(f"no source named {source_name!r}")
    rows = [
        (source.name, item.id, item.status.upper(), " ".join(item.observed.split()))
        for source, readiness in results
        for item in readiness.checks
    ]
    _print_table(("SOURCE", "CHECK", "STATUS", "OBSERVED"), rows)
    for source, readiness in results:
        for item in readiness.checks:
            if item.fix and item.status in ("fail", "warn"):
                click.echo(f"\nFix {source.name} {item.id}:")
                click.echo("  " + item.fix.replace("\n", "\n  "))
    unready = [source.name for source, readiness in results if not readiness.ready]
    click.echo(
        f"\n{len(results)} checked, {len(results) - len(unready)} ready"
        + (f"; not ready: {', '.join(unready)}" if unready else "")
    )
    if unready:
        raise SystemExit(1)


@rosetta_cli.command("sample")
@click.option("--source", "source_name", help="Sample only this source (by name).")
def sample(source_name: str | None) -> None:
    """Sample every source (or one) now, store the results and print them."""
    from .monitor.rounds import sample_sources
    from .sources.services import after_round

    samples = after_round(sample_sources(name=source_name))
    if source_name and not samples:
        raise click.ClickException(f"no source named {source_name!r}")
    header = ("SOURCE", "STATUS", "WAL_DIR_BYTES", "RETAINED_BYTES", "SLOTS", "DURATION", "ERROR")
    rows = [
        (
            s.name,
            s.status or ("OK" if s.ok else "ERROR"),
            _bytes(s.size_bytes),
            _bytes(s.retained_bytes),
            str(len(s.slots)) if s.ok else "-",
            f"{s.duration_ms} ms",
            s.error or "",
        )
        for s in samples
    ]
    _print_table(header, rows)
    failed = sum(1 for s in samples if not s.ok)
    click.echo(f"{len(samples)} sampled, {failed} failed")
    # after_round evaluated the alert rules; deliver what they queued before exiting.
    from .alerts.engine.delivery import deliver_due
    from .alerts.services import banner_counts

    delivered = deliver_due()
    counts = banner_counts()
    click.echo(
        f"alerts firing: {counts['critical']} critical, {counts['warning']} warning; "
        f"{delivered} notification{'s' if delivered != 1 else ''} sent"
    )


@rosetta_cli.command("verify")
@click.argument("pipeline_name")
@click.option(
    "--sample-keys",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Keys compared per table (every key of a table under 10,000 rows).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.IntRange(1),
    default=3600,
    show_default=True,
    help="Seconds to wait for the result.",
)
def verify(pipeline_name: str, sample_keys: int, wait_s: int) -> None:
    """Ask an engine process to verify a pipeline, wait and print what it found; exit 1 when
    a table differs, 2 when Verify failed or gave no answer in time."""
    import time

    from .errors import DomainError
    from .models import Pipeline, PipelineVerification
    from .pipelines import verify as verifying

    pipeline = db.session.scalars(select(Pipeline).where(Pipeline.name == pipeline_name)).first()
    if pipeline is None:
        raise click.ClickException(f"no pipeline named {pipeline_name!r}")
    try:
        verification, new = verifying.request_verify(pipeline, sample_keys)
    except DomainError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None
    click.echo(
        f"Verify {verification.id} of {pipeline.name} "
        + ("asked for" if new else "already under way")
        + "; waiting for an engine process to do it."
    )
    deadline = time.monotonic() + wait_s
    found: PipelineVerification | None = verification
    while found is not None and found.state == "running" and time.monotonic() < deadline:
        time.sleep(1)
        db.session.expire_all()
        found = db.session.get(PipelineVerification, verification.id)
    if found is None or found.state == "running":
        click.echo(f"No result within {wait_s} s: GET /api/v1/pipelines/{pipeline.id}/verify")
        raise SystemExit(2)
    result = verifying.shown(found)
    rows = [
        (
            t.table,
            _bytes(t.source_rows),
            _bytes(t.destination_rows),
            str(t.sampled),
            str(t.differing_keys),
            "yes" if t.ok else "NO",
        )
        for t in result.tables
    ]
    _print_table(("TABLE", "SOURCE ROWS", "DESTINATION ROWS", "SAMPLED", "DIFFERING", "SAME"), rows)
    for t in result.tables:
        for one in t.differing:
            click.echo(f"{t.table} {one.key}: {one.problem} ({', '.join(one.columns)})")
        if t.note:
            click.echo(f"{t.table}: {t.note}")
    if result.state == "failed":
        click.echo(f"Verify failed: {result.message}", err=True)
        raise SystemExit(2)
    click.echo("The destination is the same." if result.ok else "The destination differs.")
    if not result.ok:
        raise SystemExit(1)


@rosetta_cli.command("scheduler")
def scheduler() -> None:
    """Run the WAL monitor alone in the foreground until SIGTERM or Ctrl+C."""
    import gc
    import signal

    from flask import current_app

    from .monitor.scheduler import MonitorScheduler

    # current_app is a proxy typed as Flask; the scheduler's threads need the app object itself.
    app = cast("LocalProxy[Flask]", current_app)._get_current_object()

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)  # the scheduler stops as on Ctrl+C: leadership freed, exit 0

    signal.signal(signal.SIGTERM, stop)
    click.echo(
        f"WAL monitor: sampling every {app.config['WAL_MONITOR_INTERVAL_SECONDS']} s "
        "(one process among those sharing the database samples); SIGTERM or Ctrl+C stops"
    )
    # As gunicorn's workers do (gunicorn.conf.py): what loading the app made lives as long as
    # the process, and the collector's full passes no longer walk it while a round is stored
    # (a quarter of the time storing a round of 10,000 sources took, profiled).
    gc.freeze()
    try:
        MonitorScheduler(app).start(blocking=True)
    except (KeyboardInterrupt, SystemExit):
        pass


@rosetta_cli.command("engine")
def engine() -> None:
    """Run the pipelines' engines in the foreground until SIGTERM or Ctrl+C."""
    import signal

    from flask import current_app

    from .engine.supervisor import Supervisor

    app = cast("LocalProxy[Flask]", current_app)._get_current_object()
    supervisor = Supervisor(app)

    def stop(signum: int, frame: object) -> None:
        supervisor.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Log lines rather than echoes and bare tracebacks (a library's thread that fails): with
    # LOG_FORMAT=json, every line the engine writes is JSON.
    threading.excepthook = _log_thread_exception
    logging.getLogger(__name__).info(
        "Engine %s: running the pipelines whose status is START or REFRESH (looking every "
        "%g s); SIGTERM or Ctrl+C stops",
        supervisor.owner,
        supervisor.settings.poll_s,
    )
    supervisor.run_forever()
    # The JVM's own threads must not hold the process: every engine is stopped by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """Log what ended a thread, as Python's default hook would print it."""
    if args.exc_type is SystemExit:
        return
    logging.getLogger(__name__).error(
        "Exception in thread %s",
        args.thread.name if args.thread is not None else "?",
        exc_info=args.exc_value,
    )


def register_cli(app: Flask) -> None:
    """Add Rosetta's command groups to the flask command."""
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)
    app.cli.add_command(rosetta_cli)
