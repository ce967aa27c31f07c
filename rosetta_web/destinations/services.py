"""Destinations: their registry entry."""

from ..models import Destination
from ..resources import Resource
from .forms import DestinationForm

DESTINATIONS = Resource(
    model=Destination, form_class=DestinationForm, label="destination", plural="destinations"
)
