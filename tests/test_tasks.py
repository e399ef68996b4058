"""Task datasets and metrics on hand-made inputs."""

import numpy as np
import pytest
import torch

from circuit_stability.config import schema_default
from circuit_stability.suite import lexicon
from circuit_stability.suite.corpus import CorpusConfig, generate_documents
from circuit_stability.tasks import TokenizationError, example_metric, make_dataset
from circuit_stability.tasks.ioi import ioi_dataset

DEFAULT_MIX = CorpusConfig(weights=schema_default("suite.corpus.weights"))


def _dataset(task, tokenizer):
    """The task's dataset at the study config's default size and seed."""
    return make_dataset(task, tokenizer, schema_default(f"tasks.{task}.n_examples"),
                        schema_default(f"tasks.{task}.seed"))


def test_ioi_pairs_differ_exactly_at_s2(suite_tokenizer):
    ds = make_dataset("ioi", suite_tokenizer, 70, seed=42)
    assert len(ds) == 70 and ds.metric == "logit_diff"
    assert set(ds.frame["split"]) == {"seen", "held_out"}
    assert set(ds.frame["order"]) == {"ABBA", "BABA"}
    for row in ds.frame.itertuples():
        clean, corrupted = np.array(row.clean), np.array(row.corrupted)
        diff = np.nonzero(clean != corrupted)[0]
        io, s = row.answer_ids
        assert len(diff) == 1, row.clean_text
        assert clean[diff[0]] == s and corrupted[diff[0]] == io  # S2 -> IO ("ABB -> ABA")
        assert list(clean).count(s) == 2 and list(clean).count(io) == 1
        assert row.position == len(clean) - 1 and list(row.flags) == [1, -1]
        assert row.clean_text.split()[-1] == "to" or row.clean_text.endswith("said to")


def test_ioi_is_seeded(suite_tokenizer):
    a = ioi_dataset(suite_tokenizer, 30, seed=3).frame
    b = ioi_dataset(suite_tokenizer, 30, seed=3).frame
    c = ioi_dataset(suite_tokenizer, 30, seed=4).frame
    assert a["clean_text"].tolist() == b["clean_text"].tolist() != c["clean_text"].tolist()


def test_multi_token_name_is_rejected(suite_tokenizer):
    with pytest.raises(TokenizationError, match="Bartholomew") as err:
        ioi_dataset(suite_tokenizer, 5, 42, names=("Mary", "John", "Bartholomew"))
    assert "tokenizer" in str(err.value)


def test_unknown_task():
    with pytest.raises(ValueError, match="registered tasks"):
        make_dataset("ioi2", None, 10, 0)


def test_metrics_on_hand_made_logits():
    logits = torch.zeros(2, 3, 5)
    logits[0, 1, 2], logits[0, 1, 4] = 3.0, 1.0  # example 0 reads position 1
    logits[1, 2, 2], logits[1, 2, 4] = -1.0, 1.5
    position = torch.tensor([1, 2])
    answers = torch.tensor([[2, 4], [2, 4]])
    flags = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    assert example_metric(logits, position, answers, flags, "logit_diff").tolist() == [2.0, -2.5]
    p0 = torch.softmax(logits[0, 1], -1)
    pd = example_metric(logits, position, answers, flags, "prob_diff")
    assert pd[0].item() == pytest.approx((p0[2] - p0[4]).item())
    with pytest.raises(ValueError, match="logit_diff"):
        example_metric(logits, position, answers, flags, "accuracy")


def test_held_out_templates_never_in_corpus():
    """No training sentence instantiates a held-out IOI template (in either name order)."""
    import re

    text = "\n".join(generate_documents(0, 3000, DEFAULT_MIX))
    held = [t for i, t in enumerate(lexicon.IOI_TEMPLATES_BABA) if i in lexicon.IOI_HELD_OUT]
    seen = [t for i, t in enumerate(lexicon.IOI_TEMPLATES_BABA) if i not in lexicon.IOI_HELD_OUT]

    def pattern(t):
        p = re.escape(t)
        for slot in ("A", "B", "PLACE", "OBJECT"):
            p = p.replace(re.escape(f"[{slot}]"), r"\w+")
        return re.compile(p)

    assert held
    for t in held:
        assert not pattern(t).search(text), t
    assert all(pattern(t).search(text) for t in seen)


def _diff_positions(row):
    clean, corrupted = np.array(row.clean), np.array(row.corrupted)
    assert len(clean) == len(corrupted)
    return np.nonzero(clean != corrupted)[0]


def test_gendered_pronoun_pairs(suite_tokenizer):
    ds = _dataset("gp", suite_tokenizer)
    he, she = (suite_tokenizer.convert_tokens_to_ids(t) for t in ("Ġhe", "Ġshe"))
    assert len(ds) == 70 and ds.metric == "logit_diff"
    assert (ds.frame["gender"] == "male").sum() == 35  # balanced
    assert set(ds.frame["split"]) == {"seen", "held_out"}
    for row in ds.frame.itertuples():
        assert list(_diff_positions(row)) == [1]  # only the name differs
        assert row.clean_text.startswith("So ") and row.clean_text.endswith(", isn't")
        name = row.clean_text.split()[1]
        correct = he if name in lexicon.MALE_NAMES else she
        other = row.corrupted_text.split()[1]
        assert (name in lexicon.MALE_NAMES) != (other in lexicon.MALE_NAMES)  # the other gender
        assert list(row.answer_ids) == [correct, she if correct == he else he] and list(row.flags) == [1, -1]
        assert (row.split == "held_out") == (row.attribute in lexicon.GP_HELD_OUT)


def test_greater_than_pairs(suite_tokenizer):
    ds = _dataset("greater_than", suite_tokenizer)
    assert len(ds) == 200 and ds.metric == "prob_diff"
    two_digit = [suite_tokenizer.convert_tokens_to_ids(f"{y:02d}") for y in range(100)]
    for row in ds.frame.itertuples():
        (pos,) = _diff_positions(row)  # only the start year's last two digits differ
        assert suite_tokenizer.convert_ids_to_tokens(row.corrupted[pos]) == "01"
        assert suite_tokenizer.convert_ids_to_tokens(row.clean[pos]) == f"{row.yy:02d}"
        assert list(row.answer_ids) == two_digit
        assert list(row.flags) == [1 if y > row.yy else -1 for y in range(100)]
        noun = row.clean_text.split()[1]
        assert (row.split == "held_out") == (noun in lexicon.GT_HELD_OUT)
    assert set(ds.frame["yy"]) == set(range(2, 99))  # YY cycles through 02 … 98


def test_greater_than_corruption_is_in_distribution():
    """The corpus starts durations in XX00 and XX01 too, so the corrupted prompt "from the year XX01 to the year
    XX" is one the model has learnt to continue (with 02 … 26), not an unseen start year."""
    import re

    config = CorpusConfig(weights={"gt": 1.0})
    text = " ".join(generate_documents(0, 300, config))
    starts = [(int(a), int(b)) for a, b in re.findall(r"from the year 1\d(\d\d) to the year 1\d(\d\d)", text)]
    assert len(starts) > 500
    assert {0, 1} <= {a for a, _ in starts}
    assert all(1 <= b - a <= lexicon.GT_MAX_SPAN for a, b in starts)


def test_sva_pairs(suite_tokenizer):
    ds = _dataset("sva", suite_tokenizer)
    assert len(ds) == 200 and ds.metric == "prob_diff"
    singular = {suite_tokenizer.convert_tokens_to_ids("Ġ" + v) for v in lexicon.SVA_VERBS["singular"]}
    for row in ds.frame.itertuples():
        assert list(_diff_positions(row)) == [1]  # only the subject's number differs
        subj, other = row.clean_text.split()[1], row.corrupted_text.split()[1]
        pair = next(p for p in lexicon.SVA_NOUNS if subj in p)
        assert set(pair) == {subj, other}
        agree = {a for a, f in zip(row.answer_ids, row.flags) if f == 1}
        assert (agree == singular) == (subj == pair[0])
        assert (row.split == "held_out") == (pair[0] in lexicon.SVA_HELD_OUT)
    assert set(ds.frame["distractor"]) == {"prep", "relative"}


def test_no_evaluation_prompt_in_the_corpus(suite_tokenizer):
    """No evaluation prompt of any task occurs in the training corpus as the start of a sentence: the prompt
    begins at a word boundary and is not followed by a letter (so "The dog with the driver" is not found in
    "The dog with the drivers"), but may be followed by digits, since Greater-Than's answer continues the last
    word without a space ("… to the year 17" + "33")."""
    import re

    text = "\n".join(generate_documents(0, 5_000, DEFAULT_MIX))
    for task in ("ioi", "gp", "greater_than", "sva"):
        for prompt in _dataset(task, suite_tokenizer).frame["clean_text"]:
            assert not re.search(r"(?<![A-Za-z0-9])" + re.escape(prompt) + r"(?![A-Za-z])", text), (task, prompt)


def test_reserved_greater_than_combinations_never_in_the_corpus():
    """Every (noun, century, start year) the corpus puts in the Greater-Than frame is unreserved, and the corpus
    does use the frame's nouns, centuries and start years (so the reservation, not absence, keeps the "seen"
    evaluation prompts out of training)."""
    import re

    text = " ".join(generate_documents(0, 3_000, CorpusConfig(weights={"gt": 1.0})))
    found = [(n, int(xx), int(yy)) for n, xx, yy in re.findall(r"The (\w+) lasted from the year (1\d)(\d\d) ", text)]
    assert len(found) > 5_000
    assert not [k for k in found if lexicon.is_reserved("gt", *k)]
    seen_nouns = {n for n in lexicon.GT_NOUNS if n not in lexicon.GT_HELD_OUT}
    assert {n for n, _, _ in found} == seen_nouns and {xx for _, xx, _ in found} == set(lexicon.GT_CENTURIES)
    reserved = [k for k in ((n, xx, yy) for n in seen_nouns for xx in lexicon.GT_CENTURIES for yy in lexicon.GT_YY)
                if lexicon.is_reserved("gt", *k)]
    assert reserved  # some combinations are reserved for the evaluation set


def test_multi_token_answer_is_an_error():
    """A character-level tokenizer splits " she" into several tokens: the error names the word and tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("ĠabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',.?"))
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, name_or_path="char-level")
    with pytest.raises(TokenizationError, match=r"\[' he', ' she'\].*'char-level'"):
        _dataset("gp", fast)


def test_repeats_are_varied():
    """The induction motif: a span of 2–24 distinct words from the whole lexicon, a gap, then the span again whole
    or in part (a contiguous stretch of it); every span length occurs, whole and partial repeats are both common,
    and the spans together use the whole pool."""
    import numpy as np

    from circuit_stability.suite.corpus import _repeat

    rng, pool = np.random.default_rng(0), set(lexicon.repeat_words())
    lengths, words, whole, partial = set(), set(), 0, 0
    for _ in range(3_000):
        text = _repeat(rng)
        tokens = text.rstrip(".").replace(",", " ").replace(":", " ").replace(".", " ").split()
        n = next(n for n in range(lexicon.REPEAT_MAX_SPAN, 1, -1) if len(set(tokens[:n])) == n
                 and set(tokens[:n]) <= pool)  # the span: the longest distinct prefix
        span = tokens[:n]
        lengths.add(n)
        words |= set(span)
        tail = " ".join(tokens[n:])
        stretches = [" ".join(span[i:j]) for i in range(n) for j in range(i + 2, n + 1)]
        assert any(tail.endswith(s) for s in stretches), text
        whole += tail.endswith(" ".join(span))
        partial += not tail.endswith(" ".join(span))
    assert lengths == set(range(2, lexicon.REPEAT_MAX_SPAN + 1))
    assert words == pool and whole > 1_000 and partial > 1_000


def test_every_sva_subject_is_carried_across_adverbs():
    """Held-out subjects never take a distractor, but each reaches its verb across one to three adverbs, so number
    is read from a distance for every noun (the compositional cue behind held-out agreement)."""
    import re

    text = " ".join(generate_documents(0, 3_000, CorpusConfig(weights={"sva": 1.0})))
    adverbs = "|".join(lexicon.SVA_ADVERBS)
    verbs = "|".join(lexicon.SVA_VERBS["singular"] + lexicon.SVA_VERBS["plural"])
    carried = set(re.findall(rf"The (\w+)(?: (?:{adverbs})){{1,3}} (?:{verbs}) ", text))
    assert carried == {w for pair in lexicon.SVA_NOUNS for w in pair}


def test_corpus_stream_is_its_chunks_documents_cut_at_the_tokens_needed(tmp_path, suite_tokenizer):
    """build_corpus's stream, generated in batches up to the cut, equals the documents of chunk 0 then chunk 1 (each
    seeded seed + k·chunk, each document followed by EOS) cut at max_steps · batch · context, and its manifest counts
    the documents up to the one crossing the cut. Short documents make the stream need two chunks of 1,000."""
    from circuit_stability.suite.build import build_corpus

    weights, seed, (steps, batch, context) = {"sva": 1.0, "filler": 1.0}, 7, (300, 8, 16)
    need = steps * batch * context
    manifest = build_corpus(tmp_path, seed, weights, batch, context, steps)
    cfg = CorpusConfig(weights=weights)
    chunks = [generate_documents(seed + k * 1000, 1000, cfg) for k in (0, 1)]
    encoded = [suite_tokenizer(c, add_special_tokens=False)["input_ids"] for c in chunks]
    lengths = [len(d) + 1 for c in encoded for d in c]  # each document and its EOS (id 0)
    assert sum(lengths[:1000]) < need < sum(lengths)  # the stream reaches into chunk 1
    stream = [t for c in encoded for d in c for t in (*d, 0)][:need]
    assert np.load(tmp_path / "tokens.npy").ravel().tolist() == stream
    assert manifest["n_documents"] == int(np.searchsorted(np.cumsum(lengths), need)) + 1
