"""Lowering: a graph becomes one Python function (codegen), run eagerly or torch.compile'd."""

from .codegen import generate_source
from .compiled import CompiledAttention, compile

__all__ = ["CompiledAttention", "compile", "generate_source"]
