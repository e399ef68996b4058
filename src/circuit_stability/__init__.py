"""circuit-stability: circuits in language models at every training checkpoint and model size.

Reproduces Tigges, Hanna, Yu & Biderman (2024), "LLM Circuit Analyses Are Consistent Across Training and
Scale" (arXiv 2407.10827), on Pythia or on an embedded Pythia-style suite trained offline.
"""

__version__ = "0.1.0"
