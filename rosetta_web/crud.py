"""The browser's list, create, edit and delete pages of a named entity, and its form."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from .errors import DomainError, DuplicateName, InUse
from .forms import ConfirmForm, EntityForm, form_view
from .htmx import render_page_or_fragment
from .readiness import summary
from .resources import Resource


def entity_form(resource: Resource, entity: Any = None, **kwargs: Any) -> EntityForm:
    """Build the entity's form, filled from the request or, on a GET, from `entity`."""
    if entity is not None and "formdata" not in kwargs and request.method == "GET":
        kwargs["data"] = resource.form_data(entity)
    form = resource.form_class(**kwargs)
    form.editing_id = entity.id if entity is not None else None
    resource.prepare_form(form)
    return form


def register_crud_views(bp: Blueprint, resource: Resource) -> None:
    """Add the list, create, edit and delete pages of `resource` to its blueprint."""
    templates = resource.plural

    def index() -> Response:
        search = request.args.get("q", "").strip()
        return render_page_or_fragment(
            f"{templates}/index.html",
            f"{templates}/_table.html",
            items=resource.order_listed(resource.search(search)),
            q=search,
            resource=resource,
        )

    @form_view
    def create() -> Response | str | tuple[str, int]:
        form = entity_form(resource)
        if form.validate_on_submit():
            return _saved(form, None)
        return _unsaved(form, None)

    @form_view
    def edit(entity_id: int) -> Response | str | tuple[str, int]:
        entity = resource.get(entity_id)
        form = entity_form(resource, entity)
        if form.validate_on_submit():
            return _saved(form, entity)
        return _unsaved(form, entity)

    def _unsaved(form: EntityForm, entity: Any) -> str | tuple[str, int]:
        """The form again; a name another entity has is a refusal the audit log records."""
        page = render_template("crud/form.html", form=form, resource=resource, entity=entity)
        if form.duplicate_name and list(form.errors) == ["name"]:  # as the API: else 422
            resource.refuse_duplicate(form, entity)
            return page, 409
        return page

    def _saved(form: EntityForm, entity: Any) -> Response | str | tuple[str, int]:
        try:
            saved = resource.save(form, entity)
        except DuplicateName as exc:
            form["name"].errors = [exc.field_message]
            page = render_template("crud/form.html", form=form, resource=resource, entity=entity)
            return page, 409
        except DomainError as exc:  # a rule refused the save (a source not ready to start)
            form.form_errors.append(str(exc))
            page = render_template("crud/form.html", form=form, resource=resource, entity=entity)
            return page, exc.status
        message = f"{resource.title} '{saved.name}' {'saved' if entity else 'created'}."
        if hasattr(saved, "readiness"):  # checked as it was saved; the save stands regardless
            message += f" {summary(saved.readiness)}"
        flash(message, "success")
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
            except InUse:
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
    bp.add_url_rule("/<id:entity_id>/edit", "edit", edit, methods=["GET", "POST"])
    bp.add_url_rule("/<id:entity_id>/delete", "delete", delete, methods=["GET", "POST"])
