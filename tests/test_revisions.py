"""Checkpoints published as hub revisions: each family's naming scheme, subsets, and the `checkpoints` command
offline. The ref lists are huggingface_hub's own GitRefs objects built from each family's published naming (the
hub cannot be reached here to record real ones)."""

import pytest
from huggingface_hub.hf_api import GitRefInfo, GitRefs

from circuit_stability.revisions import (CRFM_TOKENS_PER_STEP, PYTHIA_TOKENS_PER_STEP, checkpoints_from_refs,
                                         every_kth, log_spaced, scheme_of)


def _refs(branches=(), tags=()):
    ref = lambda kind, n, i: GitRefInfo(name=n, ref=f"refs/{kind}/{n}", target_commit=f"{i:040x}")  # noqa: E731
    return GitRefs(branches=[ref("heads", n, i) for i, n in enumerate(branches)], converts=[],
                   tags=[ref("tags", n, 1000 + i) for i, n in enumerate(tags)])


def test_pythia_steps_and_tokens():
    refs = _refs(["main", "step0", "step1", "step512", "step1000", "step143000"])
    found = checkpoints_from_refs("EleutherAI/pythia-160m", refs)
    assert [c.step for c in found] == [0, 1, 512, 1000, 143000]
    assert found[-1].tokens_seen == 143000 * PYTHIA_TOKENS_PER_STEP == 299_892_736_000  # Pythia's 300B tokens
    assert found[0].commit == f"{1:040x}" and found[0].revision == "step0"


def test_crfm_gpt2_checkpoints():
    refs = _refs(["main", "checkpoint-0", "checkpoint-10", "checkpoint-100000", "checkpoint-400000"])
    found = checkpoints_from_refs("stanford-crfm/alias-gpt2-small-x21", refs)
    assert [c.step for c in found] == [0, 10, 100000, 400000]
    assert found[-1].tokens_seen == 400000 * CRFM_TOKENS_PER_STEP
    assert scheme_of("stanford-crfm/expanse-gpt2-medium-x777").name == "crfm"


def test_olmo_tokens_come_from_the_name():
    refs = _refs(["main", "step1000-tokens2B", "step477000-tokens1000B", "step20-tokens0B"])
    found = checkpoints_from_refs("allenai/OLMo-1B-0724-hf", refs)
    assert [(c.step, c.tokens_seen) for c in found] == [(20, 0), (1000, 2 * 10**9), (477000, 1000 * 10**9)]


def test_olmo2_stages_are_kept_apart():
    refs = _refs(["stage1-step1000-tokens5B", "stage1-step2000-tokens9B", "stage2-ingredient1-step1000-tokens4B",
                  "stage2-ingredient2-step1000-tokens4B", "main"])
    found = checkpoints_from_refs("allenai/OLMo-2-0425-1B", refs)
    assert [(c.stage, c.step) for c in found] == [("stage1", 1000), ("stage1", 2000), ("stage2-ingredient1", 1000),
                                                  ("stage2-ingredient2", 1000)]


def test_smollm2_and_amber_need_tokens_per_step_and_read_tags():
    found = checkpoints_from_refs("HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints",
                                  _refs(["main", "step-40000", "step-80000"]))
    assert [(c.step, c.tokens_seen) for c in found] == [(40000, None), (80000, None)]
    found = checkpoints_from_refs("HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints",
                                  _refs(["step-40000"]), tokens_per_step=1000)
    assert found[0].tokens_seen == 40_000_000
    found = checkpoints_from_refs("LLM360/Amber", _refs(["main"], tags=["ckpt_000", "ckpt_359", "ckpt_010"]))
    assert [c.step for c in found] == [0, 10, 359] and found[0].commit == f"{1000:040x}"  # tags are read too


def test_unknown_repository_and_a_step_published_twice():
    with pytest.raises(ValueError, match="no checkpoint naming scheme for 'gpt2'.*pythia.*crfm.*olmo"):
        scheme_of("gpt2")
    with pytest.raises(ValueError, match="step 10 is published twice, as 'checkpoint-10' and 'checkpoint-010'"):
        checkpoints_from_refs("stanford-crfm/alias-gpt2-small-x21", _refs(["checkpoint-10", "checkpoint-010"]))


def test_every_kth_and_log_spaced_subsets():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] + list(range(1000, 143001, 1000))
    found = checkpoints_from_refs("EleutherAI/pythia-70m", _refs([f"step{s}" for s in steps]))
    assert len(found) == 154
    kept = every_kth(found, 10)
    assert kept[0].step == 0 and kept[-1].step == 143000 and len(kept) == 17
    logs = log_spaced(found, 12)
    assert logs[0].step == 0 and logs[-1].step == 143000
    picked = [c.step for c in logs]
    assert picked == sorted(picked) and len(picked) == len(set(picked)) <= 12
    assert sum(s <= 512 for s in picked) >= 5  # log spacing keeps the early checkpoints
    with pytest.raises(ValueError, match="n >= 2"):
        log_spaced(found, 1)
    with pytest.raises(ValueError, match="every must be >= 1"):
        every_kth(found, 0)


def test_checkpoints_command_offline_says_it_needs_the_hub(monkeypatch, capsys):
    """With the hub unreachable (offline mode) the command exits 2 naming the repository; an unknown repository
    is refused before any request."""
    from circuit_stability.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as stop:
        main(["checkpoints", "allenai/OLMo-1B-0724-hf"])
    assert stop.value.code == 2
    assert "cannot list the revisions of allenai/OLMo-1B-0724-hf" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no checkpoint naming scheme for 'foo/bar'"):
        main(["checkpoints", "foo/bar"])


def test_a_steps_revision_formatted_or_found_among_the_refs_or_in_the_cache(tmp_path, monkeypatch):
    """Names that are a function of the step are formatted offline (each parses back to its step); OLMo's, which
    carry the tokens too, are found among the hub's refs or, in an analysis job, among the refs the download left
    in the Hugging Face cache (its on-disk layout: models--owner--name/refs/<revision>); a missing step names the
    nearest published ones; Pythia's go through its 154-step check and OLMo 2 is refused."""
    from circuit_stability.models import checkpoint_revision, hub_family
    from circuit_stability.revisions import cached_revisions, parse_revision, revision_of

    for repo, step, name in [("stanford-crfm/alias-gpt2-small-x21", 100, "checkpoint-100"),
                             ("HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints", 40000, "step-40000"),
                             ("LLM360/Amber", 7, "ckpt_007"), ("EleutherAI/pythia-70m", 1000, "step1000")]:
        assert revision_of(repo, step) == name
        assert parse_revision(scheme_of(repo), name).step == step
    olmo = "allenai/OLMo-1B-0724-hf"
    refs = _refs(["main", "step1000-tokens4B", "step20000-tokens84B"])
    assert revision_of(olmo, 20000, refs) == "step20000-tokens84B"
    with pytest.raises(LookupError, match=r"no checkpoint of step 3000 on the hub; nearest steps: \[1000, 20000\]"):
        revision_of(olmo, 3000, refs)
    cache = tmp_path / "hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    with pytest.raises(LookupError, match="in the Hugging Face cache .*no checkpoint found there at all"):
        checkpoint_revision(olmo, 1000)
    (cache / "models--allenai--OLMo-1B-0724-hf" / "refs").mkdir(parents=True)
    (cache / "models--allenai--OLMo-1B-0724-hf" / "refs" / "step1000-tokens4B").write_text("a" * 40)
    assert cached_revisions(olmo) == ["step1000-tokens4B"]
    assert checkpoint_revision(olmo, 1000) == "step1000-tokens4B"
    with pytest.raises(ValueError, match="has no checkpoint at step 1001"):
        checkpoint_revision("EleutherAI/pythia-70m", 1001)
    assert [hub_family(r) for r in ("EleutherAI/pythia-70m-seed3", olmo, "LLM360/Amber")] == ["pythia", "olmo", "amber"]
    with pytest.raises(NotImplementedError, match="OLMo 2 normalises each attention and MLP output"):
        hub_family("allenai/OLMo-2-0425-1B")


def test_hub_shapes_of_the_families_for_the_scheduler():
    """Each family's repositories map to their published shape (the scheduler's memory and time); Pythia's to its
    size; an unknown repository is named."""
    from circuit_stability.scale import PUBLISHED_SHAPES, hub_shape, pythia_shape

    assert hub_shape("EleutherAI/pythia-1.4b-deduped") == pythia_shape("1.4b")
    assert hub_shape("stanford-crfm/caprica-gpt2-medium-x81").n_parameters == PUBLISHED_SHAPES["gpt2-medium"].n_parameters
    assert hub_shape("allenai/OLMo-7B-0724-hf").n_layers == 32
    assert hub_shape("HuggingFaceTB/SmolLM2-360M-intermediate-checkpoints").d_model == 960
    with pytest.raises(ValueError, match="no published shape known for 'stanford-crfm/x-gpt2-large-x1'"):
        hub_shape("stanford-crfm/x-gpt2-large-x1")
