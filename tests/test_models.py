"""Loading checkpoints: the hooked bridge computes what Hugging Face computes, and its reader inputs are what
the engine assumes (the pre-LayerNorm residual stream)."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from circuit_stability.models import check_reader_inputs, load_model
from circuit_stability.suite import corpus
from circuit_stability.suite.tokenizer import build_tokenizer


def _random_checkpoint(root, rotary_pct: float):
    """``<root>/rand/step0``: a random GPT-NeoX (3 layers, 4 heads of 16 dims) with Pythia's parallel residual."""
    tok = build_tokenizer(corpus.lexicon_sample())
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=256, rotary_pct=rotary_pct, use_parallel_residual=True,
                        tie_word_embeddings=False, max_position_embeddings=64)
    folder = root / "rand" / "step0"
    GPTNeoXForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("rotary_pct", [0.25, 1.0])
def test_bridge_logits_equal_hugging_face(tmp_path, rotary_pct):
    """The hooked TransformerBridge (split q/k/v inputs, per-head results, MLP inputs on) gives Hugging Face's
    logits in float32, with Pythia's partial rotary (25% of each head) and with full rotary. Tolerance: 1e-5
    absolute on logits of magnitude ~0.7 (measured: 3e-7; with the other rotary fraction the logits differ by
    5e-3)."""
    folder = _random_checkpoint(tmp_path, rotary_pct)
    hf = GPTNeoXForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    bridge = load_model("rand", 0, tmp_path, device="cpu")
    tokens = torch.randint(3, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(tokens).logits
        got = bridge(tokens)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_reader_inputs_are_the_pre_layer_norm_residual(tmp_path):
    """load_model's probe passes on a correctly hooked bridge and fails loudly when a reader input is not the
    residual stream (here: block 0's query input replaced by its layer-normed value, as TransformerLens would
    hand it if its captured residual were missing)."""
    _random_checkpoint(tmp_path, 0.25)
    bridge = load_model("rand", 0, tmp_path, device="cpu")  # runs check_reader_inputs
    ln = bridge.blocks[0].ln1

    def post_ln(x, hook):
        return ln(x[:, :, 0]).unsqueeze(2).expand_as(x).clone()

    with bridge.hooks(fwd_hooks=[("blocks.0.hook_q_input", post_ln)]):
        with pytest.raises(RuntimeError, match=r"blocks\.0\.hook_q_input is not the pre-LayerNorm residual"):
            check_reader_inputs(bridge)
    check_reader_inputs(bridge)  # the hook is gone again


@pytest.mark.parametrize("damage", ["truncated", "header cut", "missing"])
def test_a_damaged_checkpoint_fails_naming_its_folder_and_the_remedy(tmp_path, damage):
    """A truncated model.safetensors (a copy cut short), one cut inside its header, or none at all fails before any
    loading with an error naming the checkpoint folder, the file and what to do, not safetensors' bare
    'incomplete metadata'."""
    from circuit_stability.models import CorruptCheckpointError

    folder = _random_checkpoint(tmp_path, 0.25)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(data[:len(data) // 2] if damage == "truncated" else data[:20])
    with pytest.raises(CorruptCheckpointError) as err:
        load_model("rand", 0, tmp_path, device="cpu")
    message = str(err.value)
    assert str(folder) in message and f"delete {folder}" in message and "models/rand" in message
    assert ("no weights file" if damage == "missing" else "model.safetensors cannot be read") in message
