"""Destination pages: list, create, edit, delete."""

from ..crud import register_crud_views
from . import bp
from .services import DESTINATIONS

register_crud_views(bp, DESTINATIONS)
