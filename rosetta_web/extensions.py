"""Flask extensions, created unbound here and bound to the app in create_app; statements built
once for the database in use (`built_once`)."""

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.model import Model as FlaskModel
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

# Named constraints keep Alembic migrations deterministic on PostgreSQL and SQLite alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

# Models subclass Model. db.Model is a class made at run time, which mypy sees as a variable
# and cannot subclass; this stand-in has what it has: Base's registry and Flask-SQLAlchemy's mixin.
if TYPE_CHECKING:

    class Model(FlaskModel, Base):
        __abstract__ = True

else:
    Model = db.Model

_BUILT: dict[tuple[Any, ...], Any] = {}
Statement = TypeVar("Statement")


def built_once(build: Callable[..., Statement], *shape: Any) -> Statement:
    """The statement `build(*shape)` makes for the database in use, built once and kept: its
    values are bind parameters, given when it runs.

    SQLAlchemy builds a statement, and then its cache key, every time one is written in place:
    about half a millisecond for a small one, which a request running a handful of them feels.
    """
    key = (build, db.session.get_bind().dialect.name, *shape)
    found = _BUILT.get(key)
    if found is None:
        found = _BUILT[key] = build(*shape)
    return cast(Statement, found)


migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()


@event.listens_for(Engine, "connect")
def _sqlite_enforces_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    # SQLite ignores foreign keys unless asked, so RESTRICT and CASCADE would silently not apply.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
