"""Exceptions raised by maskgraph.

Every error a user can cause derives from :class:`MaskgraphError`. Graph errors carry the
location (file, line, node, parameter or port) so that the message points at the culprit.
"""

from __future__ import annotations


class MaskgraphError(Exception):
    """Base class of every error maskgraph raises on purpose."""


class GraphError(MaskgraphError):
    """A graph (YAML text, dict or file) is malformed.

    The message starts with the location: ``file:line: node 'n', parameter 'p': what is wrong``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        node: str | None = None,
        param: str | None = None,
        port: str | None = None,
    ) -> None:
        self.reason = message
        self.file = file
        self.line = line
        self.node = node
        self.param = param
        self.port = port
        super().__init__(self._format())

    def _format(self) -> str:
        from .display import printable

        where = []
        if self.file:
            file = printable(self.file, limit=None)
            where.append(f"{file}:{self.line}" if self.line else file)
        elif self.line:
            where.append(f"line {self.line}")
        what = []
        if self.node:
            what.append(f"node '{printable(self.node)}'")
        if self.param:
            what.append(f"parameter '{printable(self.param)}'")
        if self.port:
            what.append(f"port '{printable(self.port)}'")
        prefix = ": ".join(x for x in (" ".join(where), ", ".join(what)) if x)
        return f"{prefix}: {self.reason}" if prefix else self.reason

    def located(self, file: str | None) -> GraphError:
        """Return the same error with ``file`` filled in (if it was not set)."""
        if self.file or not file:
            return self
        return type(self)(
            self.reason, file=file, line=self.line, node=self.node, param=self.param, port=self.port
        )


class YAMLSyntaxError(GraphError):
    """The text is not YAML, not a mapping, or uses a forbidden tag."""


class UnknownOperatorError(GraphError):
    """A node names an operator that is not registered."""


class ParameterError(GraphError):
    """A parameter is unknown, missing, of the wrong type or out of range."""


class WiringError(GraphError):
    """A node's inputs are wrong: unknown source, missing port or mismatched port types."""


class CycleError(GraphError):
    """The graph has a cycle."""


class OutputError(GraphError):
    """The graph's output is missing or not a Mask."""


class OverrideError(GraphError):
    """An override names a graph parameter that does not exist."""


class ShapeError(MaskgraphError):
    """Tensors given to a compiled attention have incompatible shapes."""


class DTypeError(MaskgraphError, TypeError):
    """A tensor given to a compiled attention has a dtype it cannot compute with (as SDPA
    refuses integer queries or masks); the message names the argument and the valid dtypes."""


class NotSupportedError(MaskgraphError):
    """A backend or mode cannot run the requested graph; the message says why."""


class CalibrationError(MaskgraphError):
    """An operator needs calibration data that is missing or malformed."""


class MaskgraphWarning(UserWarning):
    """A graph is valid but probably not what was meant (e.g. a node that feeds nothing)."""


class SweepFileError(GraphError):
    """A sweep file (``maskgraph sweep``) is malformed; the message starts with ``file:line``,
    names the key and says what would be valid."""


class RunFolderError(MaskgraphError):
    """An ``eval`` run folder cannot be used as asked: it is not a run, one of its files is
    malformed, or it was made with other settings than the ones given now."""


class BenchmarkDataError(MaskgraphError):
    """A standard benchmark's local copy (``eval --data``) is missing or not in the benchmark's
    schema; the message says which files are expected, where to get them, and the path tried."""


class OutputPathError(MaskgraphError):
    """An output path cannot be written; raised before any work starts."""
