"""The embedded suite's tokenizer: a word-level vocabulary with GPT-2/Pythia-style byte-level spaces.

Built with the `tokenizers` library and wrapped as a ``transformers.PreTrainedTokenizerFast`` so it saves
next to each checkpoint and loads exactly like Pythia's. A word preceded by a space is the token ``Ġword``
(as in Pythia's BPE), so `" Mary"` and `"Mary"` are different single tokens. Digits are split into pairs
(`" 1732"` → `" 17"`, `"32"`), the tokenization Greater-Than relies on (reference.md §2.3).
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|padding|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = (EOS, PAD, UNK)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\d\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer whose vocabulary is every pre-token occurring in ``texts``
    (and each ``Ġword`` also without its space, as a document's first word).

    Args:
        texts: strings covering the vocabulary (e.g. :func:`corpus.lexicon_sample`).

    Returns:
        A fast tokenizer with ids ``0: <|endoftext|>``, ``1: <|padding|>``, ``2: <|unk|>``, then the pre-tokens
        in sorted order (deterministic for the same ``texts``).
    """
    pre = _pre_tokenizer()
    pieces = set()
    for text in texts:
        pieces.update(p for p, _ in pre.pre_tokenize_str(text))
    pieces |= {p[1:] for p in pieces if p.startswith("Ġ") and len(p) > 1}  # the word at a document's start
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + sorted(pieces - set(SPECIAL_TOKENS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, clean_up_tokenization_spaces=False)
