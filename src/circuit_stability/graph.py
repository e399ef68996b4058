"""The computational graph of edge attribution: nodes, edges and their dense index (design §4).

Nodes (as in EAP-IG and MIB): ``input`` (the token embedding), one node per attention head ``a{l}.h{h}``, one
per MLP ``m{l}``, and ``logits``. *Writers* are the nodes whose outputs are added into the residual stream
(input, heads, MLPs); *readers* are the inputs that read the residual stream: each head's query, key and value
input (``a{l}.h{h}<q|k|v>``), each MLP's input and the logits. An edge ``u->v`` joins a writer to a reader
downstream of it; with parallel attention + MLP (GPT-NeoX/Pythia) MLP ``l`` does not read layer ``l``'s heads.

Writers are numbered ``input, a0.h0 … a0.h{H-1}, m0, a1.h0, …``; readers ``a0.h0<q> … a0.h{H-1}<q>, <k>…, <v>…,
m0, a1…, logits``. The writers a reader can see always form a prefix of the writer order, so one integer per
reader (:attr:`Graph.n_upstream`) describes the whole edge set and a ``[n_writers, n_readers]`` boolean mask
(:attr:`Graph.edge_mask`) indexes every score table. Edges are listed in row-major order of that mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

QKV = ("q", "k", "v")


def head_name(layer: int, head: int) -> str:
    """The graph's node name of attention head ``head`` of layer ``layer``: ``a{layer}.h{head}`` (design §4), the
    name every artefact uses for a head (circuit nodes, component scores, roles)."""
    return f"a{layer}.h{head}"


def edge_count(n_layers: int, n_heads: int, parallel_attn_mlp: bool = True) -> int:
    """Number of edges, design §4: E = Σ_{l<L} (1 + l(H+1))(3H+1) + 1 + L(H+1) with parallel attention.

    Without parallel attention MLP ``l`` also reads the ``H`` heads of layer ``l``: ``+ L·H`` edges.
    """
    e = sum((1 + l * (n_heads + 1)) * (3 * n_heads + 1) for l in range(n_layers)) + 1 + n_layers * (n_heads + 1)
    return e if parallel_attn_mlp else e + n_layers * n_heads


@dataclass(frozen=True)
class Graph:
    """The edge graph of a model with ``n_layers`` layers of ``n_heads`` heads (immutable; one per model shape).

    Attributes:
        n_layers: L.
        n_heads: H.
        parallel_attn_mlp: True for GPT-NeoX/Pythia (MLP l reads only layers < l).
    """

    n_layers: int
    n_heads: int
    parallel_attn_mlp: bool = True

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"a graph needs n_layers, n_heads >= 1; got {self.n_layers}, {self.n_heads}")

    # ---- writers (forward nodes)
    @property
    def n_writers(self) -> int:
        """1 + L(H+1): input, every head, every MLP."""
        return 1 + self.n_layers * (self.n_heads + 1)

    def writer_index(self, layer: int, head: int | None = None) -> int:
        """Index of head ``a{layer}.h{head}`` (or of MLP ``m{layer}`` when ``head`` is None)."""
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if head is None else head)

    @cached_property
    def writer_names(self) -> list[str]:
        names = ["input"]
        for l in range(self.n_layers):
            names += [head_name(l, h) for h in range(self.n_heads)] + [f"m{l}"]
        return names

    # ---- readers (backward nodes)
    @property
    def readers_per_layer(self) -> int:
        """3H + 1: the q, k, v inputs of every head and the MLP input."""
        return 3 * self.n_heads + 1

    @property
    def n_readers(self) -> int:
        """L(3H+1) + 1."""
        return self.n_layers * self.readers_per_layer + 1

    def reader_index(self, layer: int, head: int | None = None, qkv: str | None = None) -> int:
        """Index of ``a{layer}.h{head}<qkv>`` (or of ``m{layer}`` when ``head`` is None)."""
        base = layer * self.readers_per_layer
        if head is None:
            return base + 3 * self.n_heads
        return base + QKV.index(qkv) * self.n_heads + head

    @property
    def logits_index(self) -> int:
        return self.n_layers * self.readers_per_layer

    @cached_property
    def reader_names(self) -> list[str]:
        names = []
        for l in range(self.n_layers):
            for c in QKV:
                names += [f"{head_name(l, h)}<{c}>" for h in range(self.n_heads)]
            names.append(f"m{l}")
        return names + ["logits"]

    # ---- edges
    @cached_property
    def n_upstream(self) -> np.ndarray:
        """``[n_readers]`` int: reader ``v`` reads writers ``0 … n_upstream[v]−1``."""
        out = np.empty(self.n_readers, dtype=np.int64)
        for l in range(self.n_layers):
            before = 1 + l * (self.n_heads + 1)
            s = l * self.readers_per_layer
            out[s : s + 3 * self.n_heads] = before
            out[s + 3 * self.n_heads] = before if self.parallel_attn_mlp else before + self.n_heads
        out[-1] = self.n_writers
        return out

    @cached_property
    def edge_mask(self) -> np.ndarray:
        """``[n_writers, n_readers]`` bool: True where ``writer -> reader`` is an edge."""
        return np.arange(self.n_writers)[:, None] < self.n_upstream[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.n_upstream.sum())

    @cached_property
    def edge_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(src, dst)``: writer and reader index of every edge, ``[n_edges]`` each, row-major order."""
        src, dst = np.nonzero(self.edge_mask)
        return src, dst

    @cached_property
    def edge_names(self) -> list[str]:
        src, dst = self.edge_index
        w, r = self.writer_names, self.reader_names
        return [f"{w[s]}->{r[d]}" for s, d in zip(src, dst)]

    # ---- structure: which reader columns belong to which node, and name lookups
    @cached_property
    def reader_writer(self) -> np.ndarray:
        """``[n_readers]`` int: the writer index of the node each reader belongs to (``a1.h2<q>`` → ``a1.h2``,
        ``m1`` → ``m1``); −1 for ``logits``, which writes nothing."""
        out = np.full(self.n_readers, -1, dtype=np.int64)
        for l in range(self.n_layers):
            for h in range(self.n_heads):
                for c in QKV:
                    out[self.reader_index(l, h, c)] = self.writer_index(l, h)
            out[self.reader_index(l)] = self.writer_index(l)
        return out

    @cached_property
    def writer_readers(self) -> tuple[np.ndarray, ...]:
        """Per writer, the ``[k]`` int reader columns of the same node: a head's q, k, v inputs, an MLP's input;
        empty for ``input``, which reads nothing."""
        return tuple(np.nonzero(self.reader_writer == w)[0] for w in range(self.n_writers))

    @cached_property
    def writer_ids(self) -> dict[str, int]:
        """Writer name (``input``, ``a0.h1``, ``m0``) → writer index."""
        return {n: i for i, n in enumerate(self.writer_names)}

    @cached_property
    def reader_ids(self) -> dict[str, int]:
        """Reader name (``a0.h1<q>``, ``m0``, ``logits``) → reader index."""
        return {n: i for i, n in enumerate(self.reader_names)}

    def edge_ids(self, src: list[str], dst: list[str], where: str = "edges") -> tuple[np.ndarray, np.ndarray]:
        """Writer and reader indices ``([n], [n])`` of edges given by node names.

        Raises:
            ValueError: naming ``where``, the first edge naming a node that is not a writer / reader of this
                graph and that node, or the first pair that is not an edge (e.g. a reader upstream of its writer).
        """
        try:
            s = np.fromiter((self.writer_ids[n] for n in src), dtype=np.int64, count=len(src))
            d = np.fromiter((self.reader_ids[n] for n in dst), dtype=np.int64, count=len(dst))
        except KeyError as e:
            i = next(i for i, (a, b) in enumerate(zip(src, dst)) if a not in self.writer_ids or b not in self.reader_ids)
            kind = "writer" if src[i] not in self.writer_ids else "reader"
            raise ValueError(f"{where}: edge {src[i]}->{dst[i]} names {e}, which is not a {kind} of {self}") from None
        bad = np.nonzero(~self.edge_mask[s, d])[0]
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{where}: {src[i]}->{dst[i]} is not an edge of {self}")
        return s, d

    def reader_node(self, reader: int) -> str:
        """Node name of a reader (``a1.h2<q>`` → ``a1.h2``)."""
        w = int(self.reader_writer[reader])
        return "logits" if w < 0 else self.writer_names[w]

    def check_scores(self, scores: np.ndarray, where: str = "edge scores") -> None:
        """The one validation of a dense score table, wherever scores are written, read or used.

        Args:
            scores: ``[n_writers, n_readers]`` (NaN off :attr:`edge_mask`, ignored there).

        Raises:
            ValueError: naming ``where``, if the shape is wrong, there are no edges, or any edge's score is NaN or
                infinite (one NaN edge would silently change which circuit is chosen).
        """
        if scores.shape != (self.n_writers, self.n_readers):
            raise ValueError(f"{where} must be [{self.n_writers}, {self.n_readers}] for {self}; got {scores.shape}")
        values = scores[self.edge_mask]
        if values.size == 0:
            raise ValueError(f"{where} are empty: no circuit can be chosen from them")
        bad = np.nonzero(~np.isfinite(values))[0]
        if len(bad):
            raise ValueError(f"{where} hold {len(bad)} NaN or infinite value(s) of {values.size} edges, the first "
                             f"at edge {self.edge_names[int(bad[0])]} ({values[bad[0]]}): no circuit can be chosen "
                             "from them")

    @classmethod
    def from_config(cls, cfg) -> "Graph":
        """Graph of a model from its config: TransformerLens (``n_layers``, ``n_heads``, ``parallel_attn_mlp``)
        or Hugging Face (``num_hidden_layers``, ``num_attention_heads``, ``use_parallel_residual``).

        Raises:
            ValueError: if the config names neither parallel-attention flag (the edge set depends on it: with
                parallel attention MLP l does not read layer l's heads), or lacks the layer/head counts.
        """
        n_layers = getattr(cfg, "n_layers", None) or getattr(cfg, "num_hidden_layers", None)
        n_heads = getattr(cfg, "n_heads", None) or getattr(cfg, "num_attention_heads", None)
        if not n_layers or not n_heads:
            raise ValueError(f"model config {type(cfg).__name__} has no layer/head counts (n_layers/n_heads or "
                             "num_hidden_layers/num_attention_heads)")
        parallel = getattr(cfg, "parallel_attn_mlp", None)
        if parallel is None:
            parallel = getattr(cfg, "use_parallel_residual", None)
        if parallel is None:
            raise ValueError(f"model config {type(cfg).__name__} has neither 'parallel_attn_mlp' (TransformerLens) "
                             "nor 'use_parallel_residual' (Hugging Face): the edge set depends on whether attention "
                             "and MLP run in parallel, so it cannot be guessed")
        return cls(int(n_layers), int(n_heads), bool(parallel))
