"""Model FLOPs (alignkit.training.flops) against counts done by hand on a tiny Llama config."""

import math

import pytest

from alignkit.training.flops import ModelShape, achieved, forward_flops, shape_from_config, step_flops, train_flops


def tiny_llama(tie: bool):
    from transformers import LlamaConfig

    # d 8, 2 layers, 2 heads of 4 (d_attn 8), 1 KV head (K, V are 8 -> 4), MLP 16, vocab 10.
    return LlamaConfig(
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        intermediate_size=16,
        vocab_size=10,
        tie_word_embeddings=tie,
    )


# By hand, per layer: q 8·8 = 64, k 8·4 = 32, v 8·4 = 32, o 8·8 = 64 (no biases) -> 192;
# gate, up, down 3·8·16 = 384; two RMSNorm weights 2·8 = 16 -> 592. Two layers 1184, final norm 8,
# LM head 10·8 = 80 -> N = 1272. The input embedding (10·8) is left out; the head is in, tied or not.
N_HAND = 2 * (64 + 32 + 32 + 64 + 3 * 8 * 16 + 2 * 8) + 8 + 10 * 8


@pytest.mark.parametrize("tie", [True, False])
def test_shape_from_config_counts_non_embedding_params_with_the_head(tie):
    assert N_HAND == 1272
    shape = shape_from_config(tiny_llama(tie))
    assert shape == ModelShape(n_params=1272, n_layers=2, attn_dim=8)


def test_shape_from_config_leaves_out_learned_positions():
    from transformers import GPT2Config

    cfg = GPT2Config(n_layer=1, n_embd=4, n_head=2, vocab_size=6, n_positions=16, bos_token_id=0, eos_token_id=0)
    # One block: ln_1 2·4, c_attn 4·12 + 12, c_proj 4·4 + 4, ln_2 2·4, c_fc 4·16 + 16, mlp c_proj 16·4 + 4
    # = 8 + 60 + 20 + 8 + 80 + 68 = 244; ln_f 8; head 6·4 = 24 (tied to wte); wte 6·4 and wpe 16·4 left out.
    assert shape_from_config(cfg) == ModelShape(n_params=244 + 8 + 24, n_layers=1, attn_dim=4)


def test_forward_train_and_step_flops_by_hand():
    shape = ModelShape(n_params=1272, n_layers=2, attn_dim=8)
    # Sequences of 3 and 5 tokens. Weights: 2·1272·(3+5) = 20352. Attention (full s×s, each sequence on its own):
    # 4·L·d_attn·s² = 4·2·8·(9 + 25) = 2176. Forward 22528; training is three forwards: 67584.
    assert forward_flops(shape, [3, 5]) == 22528
    assert train_flops(shape, [3, 5]) == 67584
    # DPO-like step: train on both, plus a reference forward over the same two sequences: 67584 + 22528.
    assert step_flops(shape, [3, 5], forward_only=[3, 5]) == 90112
    assert step_flops(shape, [3, 5]) == 67584
    # One sequence of 8 is not two of 4: attention grows with s² (4·2·8·64 = 4096 vs 4·2·8·32 = 2048).
    assert forward_flops(shape, [8]) - forward_flops(shape, [4, 4]) == 4096 - 2048
    assert forward_flops(shape, []) == 0


def test_per_token_form_matches_palm():
    # Per token of a length-s sequence, fwd+bwd: 6N + 12·L·d_attn·s (PaLM appendix B).
    shape = ModelShape(n_params=1000, n_layers=3, attn_dim=16)
    s = 7
    assert train_flops(shape, [s]) / s == 6 * 1000 + 12 * 3 * 16 * s


def test_achieved_tflops_and_mfu():
    out = achieved(3e12, 2.0, peak_tflops=3.0)
    assert math.isclose(out["tflops"], 1.5) and math.isclose(out["mfu"], 0.5)
    assert achieved(3e12, 2.0, peak_tflops=None) == {"tflops": 1.5}  # no peak: no mfu
    # Two devices: the flops are the total of both, so utilisation is over twice the peak.
    assert math.isclose(achieved(3e12, 2.0, peak_tflops=3.0, devices=2)["mfu"], 0.25)
    with pytest.raises(ValueError):
        achieved(1.0, 0.0, peak_tflops=1.0)


def test_rl_step_flops_by_hand():
    from alignkit.training.flops import rl_step_flops

    shape = ModelShape(n_params=100, n_layers=2, attn_dim=4)
    # one forward over a sequence of s tokens: 2·100·s + 4·2·4·s² = 200·s + 32·s²
    fwd = {3: 200 * 3 + 32 * 9, 5: 200 * 5 + 32 * 25}  # 888, 1800
    # sampled 3 and 5 (generation: one forward each); 5 kept, 2 no-grad passes and 3 trained passes over it
    got = rl_step_flops(shape, [3, 5], [5], forward_passes=2, train_passes=3)
    assert fwd == {3: 888, 5: 1800}
    assert got == (fwd[3] + fwd[5]) + 2 * fwd[5] + 3 * 3 * fwd[5]
