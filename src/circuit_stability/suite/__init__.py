"""The embedded Pythia-style suite: corpus grammar, tokenizer and trainer (design §6)."""
