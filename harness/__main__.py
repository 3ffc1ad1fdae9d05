"""`python -m harness`: the ptcheck command line."""
from .cli import entry

entry()
