"""Built-in operators. Importing this package registers them all (one module per family)."""

from . import combine, fixed, scores, select, zoo  # noqa: F401
