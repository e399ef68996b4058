"""The computational graph of edge attribution: nodes, edges and their dense index (design §4).

Nodes (as in EAP-IG and MIB): ``input`` (the token embedding, with the learned absolute position embedding where the
model has one: GPT-2), one node per attention head ``a{l}.h{h}``, one per MLP ``m{l}``, and ``logits``. *Writers*
are the nodes whose outputs are added into the residual stream (input, heads, MLPs); *readers* are the inputs that
read the residual stream: each head's query input ``a{l}.h{h}<q>``, each key/value input, each MLP's input and the
logits. An edge ``u->v`` joins a writer to a reader downstream of it. With parallel attention + MLP (GPT-NeoX/Pythia)
MLP ``l`` does not read layer ``l``'s heads; with sequential blocks (GPT-2, OLMo, Llama) it does.

**Grouped-query attention** (Llama: SmolLM2, Llama 3; ``K`` key/value heads shared by groups of
``H/K`` query heads; query head ``h`` uses key/value head ``h // (H/K)``, as ``repeat_kv`` in transformers): a key or
value input is a reader *per key/value head*, ``a{l}.kv{g}<k>`` / ``<v>``, read by every query head of its group.
Patching such an input changes the keys (values) of all ``H/K`` heads of the group at once — the intervention the
model's own computation allows, since the group's heads share one key projection of one residual stream. (hannamw/
EAP-IG instead ungroups the key/value projections into one copy per query head, through TransformerLens 3's
``ungroup_grouped_query_attention``, which TransformerLens 4's bridge lacks; the two agree when ``K = H``.) With
``K = H`` the names are the per-head ``a{l}.h{h}<k>`` / ``<v>`` and nothing changes.

Writers are numbered ``input, a0.h0 … a0.h{H-1}, m0, a1.h0, …``; readers ``a0.h0<q> … a0.h{H-1}<q>``, the ``K`` key
inputs, the ``K`` value inputs, ``m0, a1…, logits``. The writers a reader can see always form a prefix of the writer
order, so one integer per reader (:attr:`Graph.n_upstream`) describes the whole edge set and a
``[n_writers, n_readers]`` boolean mask (:attr:`Graph.edge_mask`) indexes every score table. Edges are listed in
row-major order of that mask.
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


def edge_count(n_layers: int, n_heads: int, parallel_attn_mlp: bool = True, n_kv_heads: int | None = None) -> int:
    """Number of edges, design §4: with ``K`` key/value heads (``K = H`` without grouped-query attention)
    E = Σ_{l<L} (1 + l(H+1))(H + 2K + 1) + 1 + L(H+1): layer ``l``'s ``H`` query, ``K`` key, ``K`` value inputs and
    its MLP input each read the ``1 + l(H+1)`` writers before layer ``l``; the logits read all ``1 + L(H+1)``.
    With sequential blocks (no parallel attention) MLP ``l`` also reads the ``H`` heads of layer ``l``: ``+ L·H``.

    Examples: pythia-160m (12 × 12, parallel) 32,347; GPT-2 small (12 × 12, sequential) 32,491, the count of
    hannamw/EAP-IG and MIB (Mueller et al. 2025).
    """
    k = n_heads if n_kv_heads is None else n_kv_heads
    e = sum((1 + l * (n_heads + 1)) * (n_heads + 2 * k + 1) for l in range(n_layers)) + 1 + n_layers * (n_heads + 1)
    return e if parallel_attn_mlp else e + n_layers * n_heads


@dataclass(frozen=True)
class Graph:
    """The edge graph of a model with ``n_layers`` layers of ``n_heads`` heads (immutable; one per model shape).

    Attributes:
        n_layers: L.
        n_heads: H (query heads).
        parallel_attn_mlp: True for GPT-NeoX/Pythia (MLP l reads only layers < l); False for sequential blocks.
        n_kv_heads: K, key/value heads (grouped-query attention); None or H without it (stored as H).
    """

    n_layers: int
    n_heads: int
    parallel_attn_mlp: bool = True
    n_kv_heads: int | None = None

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"a graph needs n_layers, n_heads >= 1; got {self.n_layers}, {self.n_heads}")
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if not 1 <= self.n_kv_heads <= self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads must divide n_heads = {self.n_heads} (grouped-query attention shares each "
                             f"key/value head among n_heads / n_kv_heads query heads); got {self.n_kv_heads}")

    @property
    def grouped(self) -> bool:
        """True with grouped-query attention (fewer key/value heads than query heads)."""
        return self.n_kv_heads < self.n_heads

    def kv_head(self, head: int) -> int:
        """The key/value head query head ``head`` reads (``head // (H/K)``, transformers' ``repeat_kv``)."""
        return head // (self.n_heads // self.n_kv_heads)

    def heads_per_reader(self, qkv: str) -> int:
        """Reader columns of one kind per layer: H for ``q``, K for ``k`` and ``v``."""
        return self.n_heads if qkv == "q" else self.n_kv_heads

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
        """H + 2K + 1: the q inputs of every head, the k and v inputs of every key/value head, the MLP input."""
        return self.n_heads + 2 * self.n_kv_heads + 1

    @property
    def n_readers(self) -> int:
        """L(H+2K+1) + 1."""
        return self.n_layers * self.readers_per_layer + 1

    def reader_columns(self, layer: int, qkv: str) -> list[int]:
        """The consecutive reader columns of layer ``layer``'s ``q`` (H of them), ``k`` or ``v`` (K) inputs, in the
        order of the hook point's head axis (``blocks.{l}.hook_{qkv}_input``, ``[batch, pos, H or K, d_model]``)."""
        start = layer * self.readers_per_layer + {"q": 0, "k": self.n_heads,
                                                   "v": self.n_heads + self.n_kv_heads}[qkv]
        return list(range(start, start + self.heads_per_reader(qkv)))

    def reader_slot(self, reader: int) -> tuple[int, str, int]:
        """``(layer, kind, index)`` of a reader column: kind ``q``/``k``/``v`` with the index along its hook point's
        head axis (a query head, or a key/value head), ``mlp`` with index 0, or ``logits`` (layer ``n_layers``)."""
        if reader == self.logits_index:
            return self.n_layers, "logits", 0
        layer, rem = divmod(reader, self.readers_per_layer)
        H, K = self.n_heads, self.n_kv_heads
        if rem < H:
            return layer, "q", rem
        if rem < H + K:
            return layer, "k", rem - H
        if rem < H + 2 * K:
            return layer, "v", rem - H - K
        return layer, "mlp", 0

    def reader_index(self, layer: int, head: int | None = None, qkv: str | None = None) -> int:
        """Index of the ``qkv`` input query head ``head`` of layer ``layer`` reads — ``a{layer}.h{head}<q>``, or the
        key/value input of its group (the head's own with ``K = H``) — or of ``m{layer}`` when ``head`` is None."""
        base = layer * self.readers_per_layer
        if head is None:
            return base + self.n_heads + 2 * self.n_kv_heads
        if qkv == "q":
            return base + head
        return self.reader_columns(layer, qkv)[self.kv_head(head)]

    @property
    def logits_index(self) -> int:
        return self.n_layers * self.readers_per_layer

    @cached_property
    def reader_names(self) -> list[str]:
        names = []
        for l in range(self.n_layers):
            names += [f"{head_name(l, h)}<q>" for h in range(self.n_heads)]
            for c in ("k", "v"):
                names += [f"a{l}.kv{g}<{c}>" if self.grouped else f"{head_name(l, g)}<{c}>"
                          for g in range(self.n_kv_heads)]
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
            out[s : s + self.readers_per_layer - 1] = before
            out[s + self.readers_per_layer - 1] = before if self.parallel_attn_mlp else before + self.n_heads
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
    def reader_owners(self) -> tuple[np.ndarray, ...]:
        """Per reader, the ``[k]`` int writer indices of the nodes that read it: ``a1.h2<q>`` → ``a1.h2``; a key or
        value input → its head, or with grouped-query attention every query head of its group; ``m1`` → ``m1``;
        ``logits`` → none (it writes nothing)."""
        out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * self.n_readers
        for l in range(self.n_layers):
            for h in range(self.n_heads):
                out[self.reader_index(l, h, "q")] = np.array([self.writer_index(l, h)])
            size = self.n_heads // self.n_kv_heads
            for c in ("k", "v"):
                for g, r in enumerate(self.reader_columns(l, c)):
                    out[r] = np.array([self.writer_index(l, h) for h in range(g * size, (g + 1) * size)])
            out[self.reader_index(l)] = np.array([self.writer_index(l)])
        return tuple(out)

    @cached_property
    def owner_mask(self) -> np.ndarray:
        """``[n_writers, n_readers]`` bool: True where the writer's node reads the reader (:attr:`reader_owners`)."""
        out = np.zeros((self.n_writers, self.n_readers), dtype=bool)
        for r, owners in enumerate(self.reader_owners):
            out[owners, r] = True
        return out

    @cached_property
    def reader_writer(self) -> np.ndarray:
        """``[n_readers]`` int: the writer index of the one node each reader belongs to (``a1.h2<q>`` → ``a1.h2``,
        ``m1`` → ``m1``); −1 for ``logits``, which writes nothing, and for a key/value input shared by a group of
        query heads (:attr:`reader_owners` lists them)."""
        return np.array([int(o[0]) if len(o) == 1 else -1 for o in self.reader_owners], dtype=np.int64)

    @cached_property
    def writer_readers(self) -> tuple[np.ndarray, ...]:
        """Per writer, the ``[k]`` int reader columns its node reads: a head's q input and the k, v inputs of its
        key/value head (shared with its group under grouped-query attention), an MLP's input; empty for ``input``,
        which reads nothing."""
        out: list[list[int]] = [[] for _ in range(self.n_writers)]
        for r, owners in enumerate(self.reader_owners):
            for w in owners:
                out[int(w)].append(r)
        return tuple(np.array(sorted(rs), dtype=np.int64) for rs in out)

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
        """Node name of a reader (``a1.h2<q>`` → ``a1.h2``; a grouped key/value input ``a1.kv0<k>`` → ``a1.kv0``,
        a node of its query heads' group that writes nothing itself)."""
        if reader == self.logits_index:
            return "logits"
        w = int(self.reader_writer[reader])
        return self.writer_names[w] if w >= 0 else self.reader_names[reader].split("<")[0]

    def reader_nodes(self, reader: int, live: np.ndarray) -> list[str]:
        """The node(s) an edge into ``reader`` ends at: the reader's own node (:meth:`reader_node`), or, for a
        key/value input shared by a group of query heads (grouped-query attention), the heads of the group that are
        live (``live``: ``[n_writers]`` bool, e.g. the writers with an outgoing edge in a circuit)."""
        owners = self.reader_owners[reader]
        if len(owners) <= 1:
            return [self.reader_node(reader)]
        return [self.writer_names[w] for w in owners if live[w]]

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
        """Graph of a model from its config: a TransformerLens bridge's (``n_layers``, ``n_heads``,
        ``parallel_attn_mlp``, ``n_key_value_heads``, ``architecture``) or a Hugging Face one
        (``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``; ``use_parallel_residual`` for
        GPT-NeoX, :data:`SEQUENTIAL_MODEL_TYPES` for the sequential families).

        Raises:
            NotImplementedError: for an architecture whose heads' contributions are not additive in the residual
                stream (:data:`NOT_ADDITIVE`: OLMo 2), saying why.
            ValueError: if the config does not say whether attention and MLP run in parallel (the edge set
                depends on it: with parallel attention MLP l does not read layer l's heads), or lacks the
                layer/head counts.
        """
        arch = getattr(cfg, "architecture", None) or next(iter(getattr(cfg, "architectures", None) or []), None)
        model_type = getattr(cfg, "model_type", None)
        for name in (arch, model_type):
            if name in NOT_ADDITIVE:
                raise NotImplementedError(f"{name}: {NOT_ADDITIVE[name]}")
        n_layers = getattr(cfg, "n_layers", None) or getattr(cfg, "num_hidden_layers", None)
        n_heads = getattr(cfg, "n_heads", None) or getattr(cfg, "num_attention_heads", None)
        if not n_layers or not n_heads:
            raise ValueError(f"model config {type(cfg).__name__} has no layer/head counts (n_layers/n_heads or "
                             "num_hidden_layers/num_attention_heads)")
        n_kv = getattr(cfg, "n_key_value_heads", None) or getattr(cfg, "num_key_value_heads", None) or n_heads
        parallel = getattr(cfg, "parallel_attn_mlp", None)
        if parallel is None:
            parallel = getattr(cfg, "use_parallel_residual", None)
        if parallel is None and model_type in SEQUENTIAL_MODEL_TYPES:
            parallel = False
        if parallel is None:
            raise ValueError(f"model config {type(cfg).__name__} (model_type {model_type!r}) has neither "
                             "'parallel_attn_mlp' (TransformerLens) nor 'use_parallel_residual' (Hugging Face) and is "
                             f"not of a sequential family {sorted(SEQUENTIAL_MODEL_TYPES)}: the edge set depends on "
                             "whether attention and MLP run in parallel, so it cannot be guessed")
        return cls(int(n_layers), int(n_heads), bool(parallel), int(n_kv))


# Hugging Face model types whose blocks are sequential (the MLP reads the attention's output): GPT-2 (Radford et al.
# 2019), Llama (Touvron et al. 2023; SmolLM2, Amber), OLMo (Groeneveld et al. 2024).
SEQUENTIAL_MODEL_TYPES = frozenset({"gpt2", "llama", "olmo"})
# Architectures refused, and why: edge patching needs every reader's input to be the sum of its upstream writers'
# outputs (plus constants); a norm applied to a sublayer's output before the residual breaks that sum.
NOT_ADDITIVE = {
    "Olmo2ForCausalLM": "OLMo 2 normalises each attention and MLP output before adding it to the residual stream "
                        "(RMSNorm after the sublayer, OLMo et al. 2024, §3.1), so a head's contribution to the "
                        "residual is not its own output and depends on every other head of its layer: per-head edges "
                        "are not additive, and patching one would not be a well-defined intervention. Analyse OLMo 1 "
                        "(allenai/OLMo-1B-0724-hf, OLMo-7B-0724-hf) instead, or treat each layer's normalised "
                        "attention output as one node (not implemented)",
}
NOT_ADDITIVE["olmo2"] = NOT_ADDITIVE["Olmo2ForCausalLM"]  # the same family by its Hugging Face model type
