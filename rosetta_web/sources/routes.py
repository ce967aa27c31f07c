"""Source pages: list, create, edit, delete."""

from ..crud import Resource, register_crud_views
from ..models import Source
from . import bp
from .forms import SourceForm

SOURCES = Resource(model=Source, form_class=SourceForm, label="source", plural="sources")

register_crud_views(bp, SOURCES)
