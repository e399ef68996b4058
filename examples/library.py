"""EAP-IG edge scores and a minimal circuit for any TransformerBridge model, from Python, without the workflow.

    python examples/library.py <hugging-face name or local folder> [n_examples]

Any architecture the engine supports (GPT-NeoX/Pythia, GPT-2, Llama with grouped-query attention, OLMo 1) and any
dataset of clean/corrupted prompt pairs: here the project's IOI generator; a Prompts built from your own tensors
works the same way (see `Prompts`).
"""

import sys

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuit_stability.attribution import Prompts, edge_attribution, interpolation_points
from circuit_stability.circuits import SearchSettings, circuit_nodes, minimal_circuit
from circuit_stability.graph import Graph
from circuit_stability.models import prepare_bridge
from circuit_stability.tasks import make_dataset


def main(model: str, n_examples: int = 20) -> None:
    bridge = prepare_bridge(TransformerBridge.boot_transformers(model, device="cpu", dtype=torch.float32))
    graph = Graph.from_config(bridge.cfg)  # nodes and edges of this architecture
    # IOI pairs: "... John gave a drink to" -> " Mary", corrupted by swapping the second name. Your own data:
    # Prompts(clean, corrupted, position, answer_ids, flags, metric) with [n, pos] token tensors.
    dataset = make_dataset("ioi", bridge.tokenizer, n_examples, seed=0)
    prompts = Prompts.from_dataset(dataset, bridge.tokenizer.pad_token_id)

    # EAP-IG with m = 5 (Hanna et al. 2024): score ≈ metric(edge corrupted) − metric(model), per edge.
    attribution = edge_attribution(bridge, graph, prompts, interpolation_points("EAP-IG", 5, "paper"),
                                   batch_size=n_examples)
    scores = attribution.scores  # [n_writers, n_readers], NaN where there is no edge
    src, dst = graph.edge_index
    top = sorted(zip(graph.edge_names, scores[src, dst]), key=lambda e: -abs(e[1]))[:5]
    print(f"{graph.n_edges} edges; logit difference {attribution.metric_clean:.3f} (clean), "
          f"{attribution.metric_corrupted:.3f} (corrupted)")
    print("largest |score|:", ", ".join(f"{name} {score:+.4f}" for name, score in top))

    # The smallest greedy circuit keeping >= 80% of the logit difference (Tigges et al. 2024).
    search = SearchSettings(threshold=0.8, max_fraction=0.05, min_search_edges=1, grid_points=8,
                            selection="greedy", validity_margin=0.5, emergence_fraction=0.5)
    found = minimal_circuit(bridge, graph, scores, prompts, search, batch_size=n_examples)
    if found.valid:
        print(f"minimal circuit: {int(found.edges.sum())} edges (greedy size {found.size}), f_paper >= 0.8: "
              f"{found.reached}; nodes:", " ".join(circuit_nodes(graph, found.edges)))
    else:
        print(f"no valid circuit: {found.invalid_reason}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
