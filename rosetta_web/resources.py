"""Named entities (sources, destinations, pipelines): their registry.

No request and no HTTP here: views, the API and the CLI call these; the domain errors they
raise (errors.py) become the envelope at the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from .audit import services as audit
from .errors import DuplicateName, InUse, NotFound
from .extensions import db
from .forms import MAX_INT, EntityForm, field_names
from .models import Pipeline
from .readiness import summary


def store_readiness(entity: Any, stored: dict[str, Any], audited: bool = False) -> None:
    """Store a source's or a destination's readiness result in a transaction of its own,
    with a check record when `audited` (an operator asked for the check).

    It never commits what the session holds pending (a pipeline's save waiting on this very
    check), and it is no edit: updated_at keeps its value.
    """
    model = type(entity)
    with db.engine.begin() as conn:
        conn.execute(
            update(model)
            .where(model.id == entity.id)
            .values(readiness=stored, updated_at=model.updated_at)
        )
        if audited:
            audit.record_on(conn, "check", audit.target_of(entity), message=summary(stored))
    set_committed_value(entity, "readiness", stored)


@dataclass(frozen=True)
class Resource:
    """One kind of named entity: its model, its form and how it is listed."""

    model: Any
    form_class: type[EntityForm]
    label: str  # "source", as an operator says it
    plural: str  # "sources": the blueprint, template folder and URL segment
    list_options: tuple[Any, ...] = ()
    # The list page's order of what search() found (by name): pipelines list worst first.
    order_listed: Callable[[list[Any]], list[Any]] = field(default=lambda items: items)
    prepare_form: Callable[[EntityForm], None] = field(default=lambda form: None)
    # Called before a save commits, with the names of the fields the save changed.
    before_commit: Callable[[Any, set[str]], None] = field(default=lambda entity, changed: None)
    # Called once a save committed (a source and a destination are checked then).
    after_save: Callable[[Any], None] = field(default=lambda entity: None)
    # Called in the deleting transaction, before the entity is deleted.
    before_delete: Callable[[Any], None] = field(default=lambda entity: None)

    @property
    def title(self) -> str:
        """Name the kind with a capital, as a heading does: "Source"."""
        return self.label.capitalize()

    def get(self, entity_id: int) -> Any:
        """Return the entity or raise NotFound (also for an id no INTEGER column can hold)."""
        entity = db.session.get(self.model, entity_id) if 0 < entity_id <= MAX_INT else None
        if entity is None:
            raise NotFound(self.title, entity_id)
        return entity

    def search(self, text: str = "") -> list[Any]:
        """Return every entity, by name, whose name contains `text`."""
        stmt = select(self.model).options(*self.list_options).order_by(self.model.name)
        text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
        if text:
            stmt = stmt.where(self.model.name.contains(text.lower(), autoescape=True))
        return list(db.session.scalars(stmt))

    def form_data(self, entity: Any) -> dict[str, Any]:
        """Return the entity's current values for its form, never its secrets."""
        secret = set(self.form_class.secret_fields)
        return {
            name: getattr(entity, name)
            for name in field_names(self.form_class)
            if name not in secret
        }

    def save(self, form: EntityForm, entity: Any = None) -> Any:
        """Store a validated form into a new or existing entity, with its audit record; a
        blank secret keeps its value."""
        action = "update" if entity is not None else "create"
        entity = entity if entity is not None else self.model()
        with audit.change(action, entity) as change:
            changed: set[str] = set()
            for name in field_names(self.form_class):
                value = form[name].data
                if name in self.form_class.secret_fields:
                    if not value:
                        continue
                elif getattr(entity, name) == value:
                    continue
                setattr(entity, name, value)
                changed.add(name)
            change.note()
            try:
                self.before_commit(entity, changed)  # what it reads may flush the change
                change.record()
                db.session.commit()
            except IntegrityError:
                # Two writers raced for the same name; the form check saw neither.
                raise DuplicateName(self.label, form["name"].data) from None
        self.after_save(entity)
        return entity

    def refuse_duplicate(self, form: EntityForm, entity: Any = None) -> DuplicateName:
        """Record the refusal of a save whose name another entity has; return its error."""
        name = form["name"].data
        exc = DuplicateName(self.label, name)
        if entity is None:
            target, action = audit.Target(self.label, None, name), "create"
        else:
            target, action = audit.target_of(entity), "update"
        was = entity.name if entity is not None else None
        audit.record_refusal(action, target, exc, {"name": [was, name]})
        return exc

    def blocking_pipelines(self, entity: Any) -> list[str]:
        """Return the names of the pipelines that use this entity (empty for pipelines)."""
        column = {"sources": Pipeline.source_id, "destinations": Pipeline.destination_id}
        if self.plural not in column:
            return []
        stmt = select(Pipeline.name).where(column[self.plural] == entity.id)
        return list(db.session.scalars(stmt.order_by(Pipeline.name)))

    def delete(self, entity: Any) -> None:
        """Delete the entity with its audit record, refusing with InUse while a pipeline
        uses it."""
        with audit.change("delete", entity) as change:
            pipelines = self.blocking_pipelines(entity)
            if pipelines:
                raise InUse(self.title, entity.name, pipelines)
            self.before_delete(entity)
            change.record()
            db.session.delete(entity)
            db.session.commit()
