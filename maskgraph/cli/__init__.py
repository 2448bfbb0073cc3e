"""The ``maskgraph`` command line: one entry point, one module per subcommand."""

from .main import main

__all__ = ["main"]
