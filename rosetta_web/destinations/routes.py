"""Destination pages: list, create, edit, delete."""

from ..crud import Resource, register_crud_views
from ..models import Destination
from . import bp
from .forms import DestinationForm

DESTINATIONS = Resource(
    model=Destination, form_class=DestinationForm, label="destination", plural="destinations"
)

register_crud_views(bp, DESTINATIONS)
