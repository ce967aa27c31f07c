"""The JVM's log events (Debezium's, Kafka's, the PostgreSQL driver's) as Python log records.

log4j2 (where SLF4J and JBoss Logging lead) and java.util.logging hand each event, on the
thread that logs it, to a Python object that re-emits it through `logging`, under
JAVA_LOGGERS plus the Java logger's name, its secrets cut out. It is written before the Java
call that logs returns: nothing waits in a buffer or a pipe to be lost when the process ends
(the engine ends with os._exit) or crashes. JPype lets go of the GIL during every Java call,
so a Java thread that logs waits for Python only as any Python thread would.

Which events reach Python is set in log4j2.properties (and WARNING for java.util.logging):
Debezium's INFO and up, the other libraries' warnings and errors. Python's levels filter
further, as for any other logger.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from .state import mask

# Java's logger io.debezium.connector.postgresql.PostgresConnectorTask logs in Python as
# rosetta_web.engine.java.io.debezium.connector.postgresql.PostgresConnectorTask.
JAVA_LOGGERS = "rosetta_web.engine.java"
APPENDER_NAME = "python"

_installed: list[Any] = []  # the Java side's Python objects, kept alive with the JVM


def python_level(java_level: int) -> int:
    """Map a log4j2 level's number (ERROR 200 … TRACE 600) to Python's level."""
    if java_level <= 200:  # FATAL, ERROR
        return logging.ERROR
    if java_level <= 300:
        return logging.WARNING
    if java_level <= 400:
        return logging.INFO
    return logging.DEBUG  # DEBUG, TRACE


def jul_level(java_level: int) -> int:
    """Map a java.util.logging level's number (SEVERE 1000 … FINEST 300) to Python's level."""
    if java_level >= 1000:
        return logging.ERROR
    if java_level >= 900:
        return logging.WARNING
    if java_level >= 800:
        return logging.INFO
    return logging.DEBUG  # CONFIG, FINE, FINER, FINEST


def emit(
    java_logger: str | None,
    level: int,
    message: str | None,
    stack_trace: str | None,
    secrets: Collection[str],
) -> None:
    """Log one Java event in Python: its logger under JAVA_LOGGERS, its stack trace as the
    record's exception text, Debezium's configuration and every secret cut out of both."""
    logger = logging.getLogger(f"{JAVA_LOGGERS}.{java_logger}" if java_logger else JAVA_LOGGERS)
    if not logger.isEnabledFor(level):
        return
    text = mask((message or "").rstrip(), secrets)
    record = logger.makeRecord(logger.name, level, "(java)", 0, text, (), None)
    if stack_trace:
        record.exc_text = mask(stack_trace.rstrip(), secrets)
    logger.handle(record)


def send_java_logging_to_python(secrets: Collection[str]) -> None:
    """Make every log event of the running JVM a Python log record; `secrets` (read at each
    event, so those added later count) never reach the log."""
    import jpype

    string_writer = jpype.JClass("java.io.StringWriter")
    print_writer = jpype.JClass("java.io.PrintWriter")
    started = jpype.JClass("org.apache.logging.log4j.core.LifeCycle$State").STARTED
    error_handler = jpype.JClass("org.apache.logging.log4j.core.appender.DefaultErrorHandler")

    def stack_trace(thrown: Any) -> str | None:
        if thrown is None:
            return None
        text = string_writer()
        thrown.printStackTrace(print_writer(text))
        return str(text.toString())

    @jpype.JImplements("org.apache.logging.log4j.core.Appender")
    class Log4jToPython:
        """log4j2's appender of every event: the root logger's only one."""

        def __init__(self) -> None:
            self.handler = error_handler(self)

        @jpype.JOverride
        def append(self, event: Any) -> None:
            emit(
                event.getLoggerName(),
                python_level(event.getLevel().intLevel()),
                event.getMessage().getFormattedMessage(),
                stack_trace(event.getThrown()),
                secrets,
            )

        @jpype.JOverride
        def getName(self) -> str:  # noqa: N802 - Java's
            return APPENDER_NAME

        @jpype.JOverride
        def getLayout(self) -> None:  # noqa: N802 - Java's
            return None

        @jpype.JOverride
        def ignoreExceptions(self) -> bool:  # noqa: N802 - Java's
            return True  # a failure here is said by log4j's status logger, not thrown at Debezium

        @jpype.JOverride
        def getHandler(self) -> Any:  # noqa: N802 - Java's
            return self.handler

        @jpype.JOverride
        def setHandler(self, handler: Any) -> None:  # noqa: N802 - Java's
            self.handler = handler

        @jpype.JOverride
        def getState(self) -> Any:  # noqa: N802 - Java's
            return started

        @jpype.JOverride
        def initialize(self) -> None:
            pass

        @jpype.JOverride
        def start(self) -> None:
            pass

        @jpype.JOverride
        def stop(self) -> None:
            pass

        @jpype.JOverride
        def isStarted(self) -> bool:  # noqa: N802 - Java's
            return True

        @jpype.JOverride
        def isStopped(self) -> bool:  # noqa: N802 - Java's
            return False

    @jpype.JImplements("java.util.logging.Filter")
    class JulToPython:
        """The filter of java.util.logging's only handler: it logs each record in Python and
        lets none through, so the handler itself never writes."""

        def __init__(self) -> None:
            self.formatter = jpype.JClass("java.util.logging.SimpleFormatter")()

        @jpype.JOverride
        def isLoggable(self, record: Any) -> bool:  # noqa: N802 - Java's
            emit(
                record.getLoggerName(),
                jul_level(record.getLevel().intValue()),
                self.formatter.formatMessage(record),
                stack_trace(record.getThrown()),
                secrets,
            )
            return False

    appender = Log4jToPython()
    log_manager = jpype.JClass("org.apache.logging.log4j.LogManager")
    context = log_manager.getContext(False)
    configuration = context.getConfiguration()
    configuration.addAppender(appender)
    configuration.getRootLogger().addAppender(appender, None, None)
    context.updateLoggers()

    jul_filter = JulToPython()
    jul_root = jpype.JClass("java.util.logging.Logger").getLogger("")
    for handler in jul_root.getHandlers():
        jul_root.removeHandler(handler)
    jul_handler = jpype.JClass("java.util.logging.ConsoleHandler")()
    jul_handler.setLevel(jpype.JClass("java.util.logging.Level").ALL)
    jul_handler.setFilter(jul_filter)
    jul_root.addHandler(jul_handler)
    # The PostgreSQL driver logs through java.util.logging: its warnings and errors only.
    jul_root.setLevel(jpype.JClass("java.util.logging.Level").WARNING)
    _installed.extend([appender, jul_filter, jul_handler])
