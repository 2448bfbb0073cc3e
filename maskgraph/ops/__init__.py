"""Built-in operators. Importing this package registers them all (one module per family)."""

from . import combine, fixed, scores, select  # noqa: F401

try:  # method operators arrive module by module; each registers itself on import
    from . import zoo  # noqa: F401
except ImportError as exc:  # pragma: no cover - only while the zoo is missing
    if "zoo" not in str(exc):
        raise
