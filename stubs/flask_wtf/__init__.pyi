# Flask-WTF 1.3 ships no type information: these stubs cover the part Rosetta uses.
from .csrf import CSRFProtect as CSRFProtect
from .form import FlaskForm as FlaskForm
