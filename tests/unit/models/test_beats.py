"""BEATs: official key names, checkpoint loading and its errors, feature shapes, padding masks, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ahamask.models.beats import BEATs, BEATsConfig, _relative_position_buckets, load_beats
from ahamask.models.tiny_beats import make_tiny_beats_checkpoint, tiny_beats_config

# The cfg keys of the released BEATs_iter3* checkpoints.
OFFICIAL_CFG_KEYS = {
    "encoder_layers",
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
    "activation_fn",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "encoder_layerdrop",
    "dropout_input",
    "layer_norm_first",
    "conv_bias",
    "conv_pos",
    "conv_pos_groups",
    "relative_position_embedding",
    "num_buckets",
    "max_distance",
    "gru_rel_pos",
    "deep_norm",
    "input_patch_size",
    "layer_wise_gradient_decay_ratio",
    "embed_dim",
    "finetuned_model",
    "predictor_dropout",
    "predictor_class",
}


def _official_keys(layers: int, finetuned: bool) -> set[str]:
    """State-dict names of the official BEATs (unilm beats/BEATs.py + backbone.py), written out by hand."""
    keys = {
        "patch_embedding.weight",  # conv_bias=False: no patch_embedding.bias
        "layer_norm.weight",
        "layer_norm.bias",
        "post_extract_proj.weight",
        "post_extract_proj.bias",
        # torch.nn.utils.weight_norm(conv, dim=2) inside nn.Sequential(conv, SamePad, GELU)
        "encoder.pos_conv.0.bias",
        "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv.0.weight_v",
        "encoder.layer_norm.weight",
        "encoder.layer_norm.bias",
    }
    for i in range(layers):
        prefix = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj", "grep_linear"):
            keys |= {f"{prefix}self_attn.{proj}.weight", f"{prefix}self_attn.{proj}.bias"}
        keys |= {f"{prefix}self_attn.grep_a", f"{prefix}self_attn.relative_attention_bias.weight"}
        for name in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
            keys |= {f"{prefix}{name}.weight", f"{prefix}{name}.bias"}
    if finetuned:
        keys |= {"predictor.weight", "predictor.bias"}
    return keys


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_beats_checkpoint(tmp_path_factory.mktemp("beats") / "tiny_beats.pt")


@pytest.fixture(scope="module")
def model(tiny_ckpt: Path) -> BEATs:
    return load_beats(tiny_ckpt)


def _speech(seconds: float, seed: int = 0) -> torch.Tensor:
    # A 220 Hz tone with a little noise: enough structure for non-trivial features.
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000), dtype=torch.float32) / 16000
    return 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.01 * torch.randn(t.shape, generator=gen)


def test_tiny_checkpoint_uses_official_cfg_keys_and_state_dict_names(tiny_ckpt: Path) -> None:
    checkpoint = torch.load(tiny_ckpt, weights_only=True)
    assert set(checkpoint) == {"cfg", "model"}
    assert set(checkpoint["cfg"]) == OFFICIAL_CFG_KEYS
    assert set(checkpoint["model"]) == _official_keys(layers=2, finetuned=True)
    assert checkpoint["model"]["patch_embedding.weight"].shape == (16, 1, 16, 16)
    assert checkpoint["model"]["encoder.pos_conv.0.weight_g"].shape == (1, 1, 16)
    assert checkpoint["model"]["encoder.pos_conv.0.weight_v"].shape == (32, 2, 16)
    assert checkpoint["model"]["encoder.layers.0.self_attn.relative_attention_bias.weight"].shape == (320, 4)
    assert checkpoint["model"]["predictor.weight"].shape == (5, 32)


def test_key_names_without_predictor_and_with_more_layers(tmp_path: Path) -> None:
    path = make_tiny_beats_checkpoint(tmp_path / "b.pt", layers=3, finetuned=False)
    state = torch.load(path, weights_only=True)["model"]
    assert set(state) == _official_keys(layers=3, finetuned=False)


def test_relative_attention_bias_is_shared_across_layers(model: BEATs) -> None:
    layers = model.encoder.layers
    assert layers[1].self_attn.relative_attention_bias is layers[0].self_attn.relative_attention_bias
    state = model.state_dict()
    first = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    assert state["encoder.layers.1.self_attn.relative_attention_bias.weight"].data_ptr() == first.data_ptr()
    # Parameters are counted once: 320 buckets x 4 heads appear a single time.
    names = [n for n, _ in model.named_parameters() if "relative_attention_bias" in n]
    assert names == ["encoder.layers.0.self_attn.relative_attention_bias.weight"]


def test_weight_g_weight_v_load_like_torch_weight_norm(model: BEATs) -> None:
    # torch's own parametrized weight norm reads the legacy weight_g / weight_v keys through its load hook;
    # the positional conv must give the same output from the same tensors.
    conv = nn.Conv1d(32, 32, kernel_size=16, padding=8, groups=16)
    conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    ours = model.encoder.pos_conv[0]
    conv.load_state_dict({"weight_g": ours.weight_g, "weight_v": ours.weight_v, "bias": ours.bias})
    x = torch.randn(2, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(conv(x), ours(x), atol=1e-6)
        # And the effective weight is g * v / ||v|| with the norm over dims 0 and 1.
        by_hand = ours.weight_g * ours.weight_v / ours.weight_v.norm(dim=(0, 1), keepdim=True)
        assert torch.allclose(ours.compute_weight(), by_hand, atol=1e-7)
    assert model.encoder.pos_conv(x).shape == (2, 32, 40)  # even kernel: the extra step is trimmed


def test_load_round_trip(tiny_ckpt: Path, model: BEATs, tmp_path: Path) -> None:
    checkpoint = torch.load(tiny_ckpt, weights_only=True)
    assert not model.training
    assert model.cfg.encoder_embed_dim == 32
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["model"][key]), key
    # Saving the loaded model's state in the official layout and loading again gives the same features.
    again = tmp_path / "again.pt"
    torch.save({"cfg": model.cfg.to_dict(), "model": model.state_dict()}, again)
    wave = _speech(1.0).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(load_beats(again).extract_features(wave)[0], model.extract_features(wave)[0])


@pytest.mark.parametrize(("seconds", "tokens"), [(1.0, 48), (2.0, 96)])
def test_feature_shapes_match_the_real_frame_rate(model: BEATs, seconds: float, tokens: int) -> None:
    # 1 s -> 98 fbank frames -> 6 time patches x 8 mel patches = 48 tokens; 2 s -> 198 -> 12 x 8 = 96.
    with torch.no_grad():
        features, mask = model.extract_features(_speech(seconds).unsqueeze(0).repeat(2, 1))
    assert features.shape == (2, tokens, 32)
    assert mask is None
    assert torch.isfinite(features).all()
    # Post-LN: every token is layer-normalised, so its mean over channels is ~ the LN bias mean.
    assert float(features.std()) > 0.1


def test_padding_mask_of_a_padded_batch(model: BEATs) -> None:
    long, short = _speech(2.0, seed=1), _speech(1.0, seed=2)
    batch = torch.zeros(2, 32000)
    batch[0], batch[1, :16000] = long, short
    padding = torch.zeros(2, 32000, dtype=torch.bool)
    padding[1, 16000:] = True
    with torch.no_grad():
        features, mask = model.extract_features(batch, padding_mask=padding)
    assert features.shape == (2, 96, 32)
    assert mask.shape == (2, 96) and mask.dtype == torch.bool
    assert not mask[0].any()
    # Official reduction: 32000 samples -> 198 frames of 161 samples (the last 122 dropped): frame f is
    # padding iff 161 f >= 16000, i.e. f >= 100. Then 198 frames -> 96 tokens of 2 frames (6 dropped):
    # token j is padding iff 2 j >= 100, i.e. j >= 50.
    assert mask[1].nonzero().flatten().tolist() == list(range(50, 96))
    # The unpadded row does not depend on what it is batched with.
    with torch.no_grad():
        alone, _ = model.extract_features(batch[:1], padding_mask=padding[:1])
    assert torch.allclose(features[0], alone[0], atol=1e-5)


def test_predictor_averages_over_unpadded_tokens(model: BEATs) -> None:
    batch = torch.stack([_speech(2.0, seed=3), torch.cat([_speech(1.0, seed=4), torch.zeros(16000)])])
    padding = torch.zeros(2, 32000, dtype=torch.bool)
    padding[1, 16000:] = True
    with torch.no_grad():
        probs, mask = model.extract_features(batch, padding_mask=padding, feature_only=False)
        features, _ = model.extract_features(batch, padding_mask=padding, feature_only=True)
        logits = model.predictor(features)
    assert probs.shape == (2, 5)
    expected = torch.stack([logits[i][~mask[i]].mean(dim=0) for i in range(2)]).sigmoid()
    assert torch.allclose(probs, expected, atol=1e-6)


def _fill_by_formula(model: BEATs) -> None:
    """Weights from a fixed formula (no RNG), so the reference numbers below do not depend on torch's RNG."""
    with torch.no_grad():
        for i, (name, param) in enumerate(model.named_parameters()):
            wave = torch.sin(0.7 * torch.arange(param.numel(), dtype=torch.float64) + 1.3 * i)
            base = 1.0 if name.endswith(("layer_norm.weight", "grep_a", "weight_g")) else 0.0
            scale = 0.5 if "relative_attention_bias" in name else 0.1
            param.copy_(base + scale * wave.float().view(param.shape))


def test_matches_the_official_numbers() -> None:
    # Reference values from the official unilm BEATs code (torchaudio fbank, float64 waveform) run on the
    # same formula weights and input; ahamask reproduced them bit for bit on CPU. Token 60 of row 1 is a
    # padded position: the official leaves its features in place.
    beats = BEATs(tiny_beats_config()).eval()
    _fill_by_formula(beats)
    t = torch.arange(32000, dtype=torch.float64) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 1250 * t + 0.5)
    tone = torch.round(tone * 32768) / 32768  # 16-bit values, exact in float32
    batch = torch.stack([tone, torch.cat([tone[:16000] * 0.5, torch.zeros(16000, dtype=torch.float64)])])
    padding = torch.zeros(2, 32000, dtype=torch.bool)
    padding[1, 16000:] = True
    with torch.no_grad():
        features, _ = beats.extract_features(batch.float(), padding_mask=padding)
        probs, _ = beats.extract_features(batch, padding_mask=padding, feature_only=False)
    expected = {
        (0, 0): [1.611858, 0.635273, -1.125280, -1.355387],
        (0, 50): [1.392575, 0.794738, -1.003720, -1.467133],
        (1, 7): [1.808819, 0.238237, -1.169448, -0.888178],
        (1, 60): [-0.861574, -1.219135, -1.303929, -0.588694],
    }
    for (row, token), values in expected.items():
        assert torch.allclose(features[row, token, :4], torch.tensor(values), atol=1e-4), (row, token)
    assert float(features.abs().mean()) == pytest.approx(0.838223, abs=1e-4)
    expected_probs = [
        [0.730392, 0.263124, 0.727919, 0.285901, 0.596751],
        [0.737479, 0.254623, 0.736745, 0.278142, 0.602824],
    ]
    assert torch.allclose(probs, torch.tensor(expected_probs), atol=1e-5)


def test_deterministic_outputs_and_checkpoints(model: BEATs, tmp_path: Path) -> None:
    wave = _speech(1.5).unsqueeze(0)
    with torch.no_grad():
        first, _ = model.extract_features(wave)
        second, _ = model.extract_features(wave)
    assert torch.equal(first, second)
    a = torch.load(make_tiny_beats_checkpoint(tmp_path / "a.pt", seed=7), weights_only=True)["model"]
    b = torch.load(make_tiny_beats_checkpoint(tmp_path / "b.pt", seed=7), weights_only=True)["model"]
    c = torch.load(make_tiny_beats_checkpoint(tmp_path / "c.pt", seed=8), weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.layers.0.fc1.weight"], c["encoder.layers.0.fc1.weight"])


def test_tiny_checkpoint_does_not_touch_the_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_beats_checkpoint(tmp_path / "x.pt")
    assert torch.equal(torch.rand(3), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind


def test_relative_position_buckets_known_values() -> None:
    # BEATs iter3: 320 buckets, max distance 800 -> 160 per direction, exact below 80, log-spaced above.
    forward = _relative_position_buckets(320, 800, 1, 1601)[0]  # key - query = 0 .. 1600
    backward = _relative_position_buckets(320, 800, 1601, 1)[:, 0]  # key - query = 0 .. -1600
    expected_forward = {0: 0, 1: 161, 5: 165, 79: 239, 80: 240, 200: 271, 799: 319, 1600: 319}
    expected_backward = {1: 1, 79: 79, 80: 80, 200: 111, 800: 159}
    assert {d: int(forward[d]) for d in expected_forward} == expected_forward
    assert {d: int(backward[d]) for d in expected_backward} == expected_backward


def test_layer_wise_gradient_decay_scales_gradients(tiny_ckpt: Path) -> None:
    # Two layers, ratio 0.6: gradients reaching the patch embedding are scaled by 0.6 ** 2 vs ratio 1.
    grads = []
    for ratio in (0.6, 1.0):
        beats = load_beats(tiny_ckpt)
        beats.encoder.layer_wise_gradient_decay_ratio = ratio
        features, _ = beats.extract_features(_speech(1.0).unsqueeze(0))
        features.sum().backward()
        grads.append(beats.patch_embedding.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1] * 0.36, rtol=1e-4, atol=1e-9)


def test_config_defaults_and_validation() -> None:
    cfg = BEATsConfig()
    assert (cfg.input_patch_size, cfg.embed_dim, cfg.encoder_embed_dim, cfg.max_distance) == (
        -1,
        512,
        768,
        1280,
    )
    assert BEATsConfig({"encoder_layers": 2, "extra_key": 1}).extra_key == 1  # kept, as the official does
    with pytest.raises(ValueError, match=r"input_patch_size=-1 \(expected a positive int\)"):
        BEATs(BEATsConfig())
    bad = dict(tiny_beats_config(), encoder_attention_heads=5, activation_fn="swish")
    with pytest.raises(ValueError, match="not divisible by encoder_attention_heads=5.*activation_fn='swish'"):
        BEATs(bad)


def test_extract_features_rejects_bad_input(model: BEATs) -> None:
    with pytest.raises(ValueError, match=r"source must be \[batch, samples\]"):
        model.extract_features(torch.zeros(16000))
    with pytest.raises(ValueError, match=r"padding_mask shape \(1, 100\) != source shape \(1, 16000\)"):
        model.extract_features(torch.zeros(1, 16000), padding_mask=torch.zeros(1, 100, dtype=torch.bool))
    with pytest.raises(ValueError, match="2000 samples give 11 fbank frames, fewer than one 16-frame patch"):
        model.extract_features(torch.zeros(1, 2000))


def _save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def test_load_errors_name_the_file_and_the_keys(tiny_ckpt: Path, tmp_path: Path) -> None:
    good = torch.load(tiny_ckpt, weights_only=True)

    missing_file = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=f"{missing_file}: no such BEATs checkpoint file"):
        load_beats(missing_file)

    not_dict = _save(tmp_path / "list.pt", [1, 2])
    with pytest.raises(ValueError, match=f"{not_dict}: expected a dict with 'cfg' and 'model'.*got list"):
        load_beats(not_dict)

    no_cfg = _save(tmp_path / "nocfg.pt", {"model": good["model"]})
    with pytest.raises(ValueError, match=r"expected a dict with 'cfg' and 'model'.*got \['model'\]"):
        load_beats(no_cfg)

    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"{text}: not a readable weights-only torch checkpoint"):
        load_beats(text)

    state = dict(good["model"])
    del state["encoder.layers.1.fc2.bias"]
    missing = _save(tmp_path / "missing.pt", {"cfg": good["cfg"], "model": state})
    with pytest.raises(ValueError, match=f"{missing}: .*missing keys: encoder.layers.1.fc2.bias$"):
        load_beats(missing)

    state = dict(good["model"], **{"encoder.extra.weight": torch.zeros(1)})
    unexpected = _save(tmp_path / "unexpected.pt", {"cfg": good["cfg"], "model": state})
    with pytest.raises(ValueError, match=r"unexpected keys: encoder.extra.weight$"):
        load_beats(unexpected)

    state = dict(good["model"], **{"predictor.weight": torch.zeros(7, 32)})
    shape = _save(tmp_path / "shape.pt", {"cfg": good["cfg"], "model": state})
    with pytest.raises(ValueError, match=r"shape mismatches: predictor.weight \(7, 32\) vs model \(5, 32\)"):
        load_beats(shape)

    bad_cfg = _save(
        tmp_path / "badcfg.pt", {"cfg": dict(good["cfg"], input_patch_size=0), "model": good["model"]}
    )
    with pytest.raises(ValueError, match=f"{bad_cfg}: BEATsConfig: input_patch_size=0"):
        load_beats(bad_cfg)


def test_errors_are_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    good = torch.load(tiny_ckpt, weights_only=True)
    # Layer 1's 20 tensors and the predictor's 2: 22 missing keys.
    state = {k: v for k, v in good["model"].items() if "layers.1." not in k and "predictor" not in k}
    path = _save(tmp_path / "many.pt", {"cfg": good["cfg"], "model": state})
    with pytest.raises(ValueError) as info:
        load_beats(path)
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys: encoder.layers.1.fc1.bias" in message
    assert message.endswith(", ... (2 more)")  # 20 listed, then a count
