"""Port types: what flows along the edges of a graph."""

from __future__ import annotations

from enum import Enum

#: A node parameter written ``$name`` reads the graph parameter ``name``.
PARAM_REF = "$"


class PortType(str, Enum):
    """The type of a value on an edge.

    Shapes (B batch, Hq query heads, Hkv key/value heads, Q queries, K keys, D head dim):

    - ``Queries``: (B, Hq, Q, D)
    - ``Keys`` / ``Values``: (B, Hkv, K, D)
    - ``AttentionMask``: additive, broadcastable to (B, Hq, Q, K) (or ``None``)
    - ``Mask``: inclusion probabilities in [0, 1], broadcastable to (B, Hq, Q, K)
    - ``Scores``: estimated logits (B, Hq, Q, K), ``-inf`` = ineligible
    - ``Partial``: numerator (B, Hq, Q, D), denominator and running max (B, Hq, Q) of
      attention over a prior mask
    - ``State``: per-(layer, node) cache held across decode steps
    """

    QUERIES = "Queries"
    KEYS = "Keys"
    VALUES = "Values"
    ATTENTION_MASK = "AttentionMask"
    MASK = "Mask"
    SCORES = "Scores"
    PARTIAL = "Partial"
    STATE = "State"


#: Graph inputs: name -> type. A port of one of these types that is not wired explicitly is
#: wired to the graph input of that type.
GRAPH_INPUTS: dict[str, PortType] = {
    "queries": PortType.QUERIES,
    "keys": PortType.KEYS,
    "values": PortType.VALUES,
    "attention_mask": PortType.ATTENTION_MASK,
}
