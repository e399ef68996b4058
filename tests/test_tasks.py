"""Task datasets and metrics on hand-made inputs."""

import numpy as np
import pytest
import torch

from circuit_stability.suite import lexicon
from circuit_stability.tasks import TokenizationError, example_metric, make_dataset
from circuit_stability.tasks.ioi import ioi_dataset


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
        ioi_dataset(suite_tokenizer, 5, names=("Mary", "John", "Bartholomew"))
    assert "tokenizer" in str(err.value)


def test_unknown_task():
    with pytest.raises(ValueError, match="registered tasks: \\['ioi'\\]"):
        make_dataset("ioi2", None)


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

    from circuit_stability.suite.corpus import generate_documents

    text = "\n".join(generate_documents(0, 3000))
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
