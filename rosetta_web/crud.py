"""Create, update, delete and list named entities, shared by the browser views and the API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from .errors import ApiError, not_found
from .extensions import db
from .forms import ConfirmForm, EntityForm, field_names, form_view
from .htmx import render_page_or_fragment
from .models import Pipeline


@dataclass(frozen=True)
class Resource:
    """One kind of named entity: its model, its form and how it is listed."""

    model: Any
    form_class: type[EntityForm]
    label: str  # "source", as an operator says it
    plural: str  # "sources": the blueprint, template folder and URL segment
    list_options: tuple[Any, ...] = ()
    prepare_form: Callable[[EntityForm], None] = field(default=lambda form: None)
    # Called before a save commits, with the names of the fields the save changed.
    before_commit: Callable[[Any, set[str]], None] = field(default=lambda entity, changed: None)

    @property
    def title(self) -> str:
        return self.label.capitalize()

    def get(self, entity_id: int) -> Any:
        """Return the entity or raise the envelope's 404."""
        entity = db.session.get(self.model, entity_id)
        if entity is None:
            raise not_found(self.title, entity_id)
        return entity

    def list(self, search: str = "") -> list[Any]:
        """Return every entity, by name, whose name contains `search`."""
        stmt = db.select(self.model).options(*self.list_options).order_by(self.model.name)
        search = search.replace("\x00", "")  # PostgreSQL text cannot hold NUL
        if search:
            stmt = stmt.where(self.model.name.contains(search.lower(), autoescape=True))
        return list(db.session.scalars(stmt))

    def form_data(self, entity: Any) -> dict[str, Any]:
        """Return the entity's current values for its form, never its secrets."""
        secret = set(self.form_class.secret_fields)
        return {
            name: getattr(entity, name)
            for name in field_names(self.form_class)
            if name not in secret
        }

    def form(self, entity: Any = None, **kwargs: Any) -> EntityForm:
        """Build the entity's form, filled from the request or from `entity`."""
        if entity is not None and "formdata" not in kwargs and request.method == "GET":
            kwargs["data"] = self.form_data(entity)
        form = self.form_class(**kwargs)
        form.editing_id = entity.id if entity is not None else None
        self.prepare_form(form)
        return form

    def save(self, form: EntityForm, entity: Any = None) -> Any:
        """Store a validated form into a new or existing entity; a blank secret keeps its value."""
        entity = entity if entity is not None else self.model()
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
        self.before_commit(entity, changed)
        db.session.add(entity)
        try:
            db.session.commit()
        except IntegrityError:
            # Two writers raced for the same name; the form check saw neither.
            db.session.rollback()
            raise ApiError(
                409,
                f"A {self.label} named '{form.name.data}' already exists",
                {"fields": {"name": [f"A {self.label} with this name already exists."]}},
            ) from None
        return entity

    def blocking_pipelines(self, entity: Any) -> list[str]:
        """Return the names of the pipelines that use this entity (empty for pipelines)."""
        column = {"sources": Pipeline.source_id, "destinations": Pipeline.destination_id}
        if self.plural not in column:
            return []
        stmt = db.select(Pipeline.name).where(column[self.plural] == entity.id)
        return list(db.session.scalars(stmt.order_by(Pipeline.name)))

    def delete(self, entity: Any) -> None:
        """Delete the entity, refusing with 409 while a pipeline uses it."""
        pipelines = self.blocking_pipelines(entity)
        if pipelines:
            raise ApiError(
                409,
                f"{self.title} '{entity.name}' is used by {len(pipelines)} pipeline"
                f"{'s' if len(pipelines) != 1 else ''}; delete or change them first",
                {"pipelines": pipelines},
            )
        db.session.delete(entity)
        db.session.commit()


def register_crud_views(bp: Blueprint, resource: Resource) -> None:
    """Add the list, create, edit and delete pages of `resource` to its blueprint."""
    templates = resource.plural

    def index() -> Response:
        search = request.args.get("q", "").strip()
        return render_page_or_fragment(
            f"{templates}/index.html",
            f"{templates}/_table.html",
            items=resource.list(search),
            q=search,
            resource=resource,
        )

    @form_view
    def create() -> Response | str:
        form = resource.form()
        if form.validate_on_submit():
            return _saved(form, None)
        return render_template("crud/form.html", form=form, resource=resource, entity=None)

    @form_view
    def edit(entity_id: int) -> Response | str:
        entity = resource.get(entity_id)
        form = resource.form(entity)
        if form.validate_on_submit():
            return _saved(form, entity)
        return render_template("crud/form.html", form=form, resource=resource, entity=entity)

    def _saved(form: EntityForm, entity: Any) -> Response | str:
        try:
            saved = resource.save(form, entity)
        except ApiError as exc:
            form.name.errors = exc.details["fields"]["name"]
            return render_template("crud/form.html", form=form, resource=resource, entity=entity)
        flash(f"{resource.title} '{saved.name}' {'saved' if entity else 'created'}.", "success")
        return redirect(url_for(f"{bp.name}.index"), 303)

    @form_view
    def delete(entity_id: int) -> Response | tuple[str, int]:
        entity = resource.get(entity_id)
        form = ConfirmForm()
        status = 200
        if form.validate_on_submit():
            try:
                name = entity.name
                resource.delete(entity)
            except ApiError:
                status = 409
            else:
                flash(f"{resource.title} '{name}' deleted.", "success")
                return redirect(url_for(f"{bp.name}.index"), 303)
        return (
            render_template(
                "crud/delete.html",
                form=form,
                resource=resource,
                entity=entity,
                pipelines=resource.blocking_pipelines(entity),
            ),
            status,
        )

    bp.add_url_rule("/", "index", index)
    bp.add_url_rule("/new", "create", create, methods=["GET", "POST"])
    bp.add_url_rule("/<int:entity_id>/edit", "edit", edit, methods=["GET", "POST"])
    bp.add_url_rule("/<int:entity_id>/delete", "delete", delete, methods=["GET", "POST"])
