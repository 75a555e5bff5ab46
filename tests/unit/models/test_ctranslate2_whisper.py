"""The CTranslate2 Whisper converter on a tiny synthetic file in CTranslate2's binary layout (no download).

The reference is built independently of the converter's mapping: the same random numbers are placed
by hand into a transformers Whisper, module by module, and its outputs must equal the converted folder's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ahamask.models.ctranslate2_whisper import (
    CT2FormatError,
    CT2Model,
    convert_ct2_whisper,
    read_ct2_model,
    write_ct2_model,
)

D, HEADS, FFN, MELS, VOCAB, SRC, TGT = 8, 2, 16, 4, 12, 100, 6
EOT, SOT = 10, 11


def _synthetic_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """A 1-layer Whisper in CTranslate2's names, float16 like the real files, zero k biases."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (0.5 * rng.standard_normal(shape)).astype(np.float16)

    def attention(prefix: str, fused: bool) -> dict[str, np.ndarray]:
        out = {f"{prefix}/layer_norm/gamma": 1 + r(D), f"{prefix}/layer_norm/beta": r(D)}
        if fused:
            bias = r(3 * D)
            bias[D : 2 * D] = 0
            out |= {f"{prefix}/linear_0/weight": r(3 * D, D), f"{prefix}/linear_0/bias": bias}
            out |= {f"{prefix}/linear_1/weight": r(D, D), f"{prefix}/linear_1/bias": r(D)}
        else:
            kv_bias = r(2 * D)
            kv_bias[:D] = 0
            out |= {f"{prefix}/linear_0/weight": r(D, D), f"{prefix}/linear_0/bias": r(D)}
            out |= {f"{prefix}/linear_1/weight": r(2 * D, D), f"{prefix}/linear_1/bias": kv_bias}
            out |= {f"{prefix}/linear_2/weight": r(D, D), f"{prefix}/linear_2/bias": r(D)}
        return out

    def ffn(prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}/layer_norm/gamma": 1 + r(D),
            f"{prefix}/layer_norm/beta": r(D),
            f"{prefix}/linear_0/weight": r(FFN, D),
            f"{prefix}/linear_0/bias": r(FFN),
            f"{prefix}/linear_1/weight": r(D, FFN),
            f"{prefix}/linear_1/bias": r(D),
        }

    v = {
        "encoder/conv1/weight": r(D, MELS, 3),
        "encoder/conv1/bias": r(D),
        "encoder/conv2/weight": r(D, D, 3),
        "encoder/conv2/bias": r(D),
        "encoder/position_encodings/encodings": r(SRC, D),
        "encoder/layer_norm/gamma": 1 + r(D),
        "encoder/layer_norm/beta": r(D),
        "encoder/num_heads": np.array(HEADS, dtype=np.int16),
        "decoder/embeddings/weight": r(VOCAB, D),
        "decoder/position_encodings/encodings": r(TGT, D),
        "decoder/layer_norm/gamma": 1 + r(D),
        "decoder/layer_norm/beta": r(D),
        "decoder/num_heads": np.array(HEADS, dtype=np.int16),
        "decoder/activation": np.array(3, dtype=np.int8),
        "decoder/alibi": np.array(0, dtype=np.int8),
        "decoder/pre_norm": np.array(1, dtype=np.int8),
        "decoder/scale_embeddings": np.array(0, dtype=np.int8),
        "decoder/start_from_zero_embedding": np.array(0, dtype=np.int8),
    }
    v |= attention("encoder/layer_0/self_attention", fused=True) | ffn("encoder/layer_0/ffn")
    v |= attention("decoder/layer_0/self_attention", fused=True) | ffn("decoder/layer_0/ffn")
    v |= attention("decoder/layer_0/attention", fused=False)
    return v


def _ct2(variables: dict[str, np.ndarray], spec: str = "WhisperSpec") -> CT2Model:
    return CT2Model(spec, 3, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})


def _hand_placed(v: dict[str, np.ndarray], max_source_positions: int = SRC):
    """A transformers Whisper holding the same numbers, placed module by module (the reference)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=VOCAB,
        d_model=D,
        num_mel_bins=MELS,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_source_positions=max_source_positions,
        max_target_positions=TGT,
        pad_token_id=EOT,
        bos_token_id=EOT,
        eos_token_id=EOT,
        decoder_start_token_id=SOT,
    )
    model = WhisperForConditionalGeneration(config).eval()

    def t(name):
        return torch.from_numpy(v[name].astype(np.float32))

    def put(module, weight, bias=None):
        module.weight.data.copy_(weight)
        if bias is not None:
            module.bias.data.copy_(bias)

    enc, dec = model.model.encoder, model.model.decoder
    put(enc.conv1, t("encoder/conv1/weight"), t("encoder/conv1/bias"))
    put(enc.conv2, t("encoder/conv2/weight"), t("encoder/conv2/bias"))
    enc.embed_positions.weight.data.copy_(t("encoder/position_encodings/encodings")[:max_source_positions])
    put(enc.layer_norm, t("encoder/layer_norm/gamma"), t("encoder/layer_norm/beta"))
    dec.embed_tokens.weight.data.copy_(t("decoder/embeddings/weight"))
    dec.embed_positions.weight.data.copy_(t("decoder/position_encodings/encodings"))
    put(dec.layer_norm, t("decoder/layer_norm/gamma"), t("decoder/layer_norm/beta"))
    for stack, layer in (("encoder", enc.layers[0]), ("decoder", dec.layers[0])):
        sa = f"{stack}/layer_0/self_attention"
        w, b = t(f"{sa}/linear_0/weight"), t(f"{sa}/linear_0/bias")
        put(layer.self_attn_layer_norm, t(f"{sa}/layer_norm/gamma"), t(f"{sa}/layer_norm/beta"))
        put(layer.self_attn.q_proj, w[:D], b[:D])
        put(layer.self_attn.k_proj, w[D : 2 * D])
        put(layer.self_attn.v_proj, w[2 * D :], b[2 * D :])
        put(layer.self_attn.out_proj, t(f"{sa}/linear_1/weight"), t(f"{sa}/linear_1/bias"))
        f = f"{stack}/layer_0/ffn"
        put(layer.final_layer_norm, t(f"{f}/layer_norm/gamma"), t(f"{f}/layer_norm/beta"))
        put(layer.fc1, t(f"{f}/linear_0/weight"), t(f"{f}/linear_0/bias"))
        put(layer.fc2, t(f"{f}/linear_1/weight"), t(f"{f}/linear_1/bias"))
    ca, layer = "decoder/layer_0/attention", dec.layers[0]
    kv_w, kv_b = t(f"{ca}/linear_1/weight"), t(f"{ca}/linear_1/bias")
    put(layer.encoder_attn_layer_norm, t(f"{ca}/layer_norm/gamma"), t(f"{ca}/layer_norm/beta"))
    put(layer.encoder_attn.q_proj, t(f"{ca}/linear_0/weight"), t(f"{ca}/linear_0/bias"))
    put(layer.encoder_attn.k_proj, kv_w[:D])
    put(layer.encoder_attn.v_proj, kv_w[D:], kv_b[D:])
    put(layer.encoder_attn.out_proj, t(f"{ca}/linear_2/weight"), t(f"{ca}/linear_2/bias"))
    model.tie_weights()
    return model


def _tokenizer_json(path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(EOT)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>", "<|startoftranscript|>"])
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct2")
    variables = _synthetic_variables()
    bin_path = write_ct2_model(_ct2(variables), root / "model.bin")
    (root / "config.json").write_text(json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [3, EOT]}))
    info = convert_ct2_whisper(
        bin_path,
        root / "hf",
        ct2_config_json=root / "config.json",
        tokenizer_json=_tokenizer_json(root / "tokenizer.json"),
    )
    return root, variables, info


def test_reader_round_trips_and_joins_split_parts(tmp_path):
    variables = _synthetic_variables(seed=1)
    whole = write_ct2_model(_ct2(variables), tmp_path / "model.bin")
    data = whole.read_bytes()
    (tmp_path / "p1").write_bytes(data[:1000])
    (tmp_path / "p2").write_bytes(data[1000:])
    for model in (read_ct2_model(whole), read_ct2_model([tmp_path / "p1", tmp_path / "p2"])):
        assert (model.spec, model.revision, model.binary_version) == ("WhisperSpec", 3, 6)
        assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
        assert sorted(model.variables) == sorted(variables)
        for name, array in variables.items():
            assert model.variables[name].dtype == array.dtype
            np.testing.assert_array_equal(model.variables[name], array)


def test_converted_outputs_equal_hand_placed_reference(converted):
    from transformers import WhisperForConditionalGeneration

    root, variables, info = converted
    loaded = WhisperForConditionalGeneration.from_pretrained(root / "hf").eval()
    reference = _hand_placed(variables)
    features = torch.randn(2, MELS, 2 * SRC, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[SOT, 3, 4, 5], [SOT, 7, 8, 9]])
    with torch.no_grad():
        enc = loaded.model.encoder(features).last_hidden_state
        enc_ref = reference.model.encoder(features).last_hidden_state
        logits = loaded(input_features=features, decoder_input_ids=tokens).logits
        logits_ref = reference(input_features=features, decoder_input_ids=tokens).logits
    assert enc.shape == (2, SRC, D)
    torch.testing.assert_close(enc, enc_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, logits_ref, rtol=0, atol=1e-6)
    # Tied output projection; parameters = stored arrays minus the zero k biases and the scalar flags.
    assert loaded.proj_out.weight is loaded.model.decoder.embed_tokens.weight
    stored = sum(a.size for a in variables.values() if a.ndim > 0)
    assert info["parameters"] == loaded.num_parameters() == stored - 3 * D


def test_config_ids_tokenizer_and_front_end(converted):
    from transformers import AutoTokenizer, WhisperConfig, WhisperFeatureExtractor

    root, _, info = converted
    config = WhisperConfig.from_pretrained(root / "hf")
    assert (config.eos_token_id, config.decoder_start_token_id, config.pad_token_id) == (EOT, SOT, EOT)
    assert (config.suppress_tokens, config.begin_suppress_tokens) == ([1, 2], [3, EOT])
    assert (config.encoder_layers, config.encoder_attention_heads, config.encoder_ffn_dim) == (1, HEADS, FFN)
    assert (info["max_source_positions"], info["chunk_length"]) == (SRC, 2)
    tok = AutoTokenizer.from_pretrained(root / "hf")
    assert tok.convert_tokens_to_ids(["<|startoftranscript|>", "w3"]) == [SOT, 3]
    assert tok.eos_token == "<|endoftext|>"
    fe = WhisperFeatureExtractor.from_pretrained(root / "hf")
    assert (fe.feature_size, fe.chunk_length, fe.nb_max_frames) == (MELS, 2, 2 * SRC)


def test_shortened_context_keeps_first_positions(tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    variables = _synthetic_variables(seed=2)
    bin_path = write_ct2_model(_ct2(variables), tmp_path / "model.bin")
    tok = _tokenizer_json(tmp_path / "tokenizer.json")
    info = convert_ct2_whisper(bin_path, tmp_path / "short", tokenizer_json=tok, max_source_positions=50)
    assert (info["max_source_positions"], info["chunk_length"]) == (50, 1)
    short = WhisperForConditionalGeneration.from_pretrained(tmp_path / "short").eval()
    table = short.model.encoder.embed_positions.weight
    assert table.shape == (50, D)
    np.testing.assert_array_equal(
        table.detach().numpy(), variables["encoder/position_encodings/encodings"][:50].astype(np.float32)
    )
    fe = WhisperFeatureExtractor.from_pretrained(tmp_path / "short")
    assert (fe.chunk_length, fe.n_samples, fe.nb_max_frames) == (1, 16000, 100)
    features = torch.randn(1, MELS, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = short.model.encoder(features).last_hidden_state
        ref = _hand_placed(variables, max_source_positions=50).model.encoder(features).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="length 100"):
        short.model.encoder(torch.zeros(1, MELS, 2 * SRC))
    for bad in (75, 150, 0):
        with pytest.raises(
            ValueError, match=rf"^max_source_positions: {bad} must be a positive multiple of 50"
        ):
            convert_ct2_whisper(
                bin_path, tmp_path / f"bad{bad}", tokenizer_json=tok, max_source_positions=bad
            )
        assert not (tmp_path / f"bad{bad}").exists()


def test_truncated_and_foreign_files_fail_in_one_line(tmp_path):
    whole = write_ct2_model(_ct2(_synthetic_variables()), tmp_path / "model.bin")
    data = whole.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match=r"cut\.bin: truncated at byte \d+ \(the data of '") as err:
        read_ct2_model(tmp_path / "cut.bin")
    assert "\n" not in str(err.value)
    (tmp_path / "foreign.bin").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(
        CT2FormatError, match=r"foreign\.bin: not a CTranslate2 model .*first word is 67324752"
    ):
        read_ct2_model(tmp_path / "foreign.bin")
    (tmp_path / "tail.bin").write_bytes(data + b"xx")
    with pytest.raises(CT2FormatError, match="2 unexpected bytes after the aliases"):
        read_ct2_model(tmp_path / "tail.bin")
    with pytest.raises(FileNotFoundError, match="no such file: .*missing.bin"):
        read_ct2_model(tmp_path / "missing.bin")


def test_wrong_spec_and_nonzero_k_bias_are_refused(tmp_path):
    tok = _tokenizer_json(tmp_path / "tokenizer.json")
    other = write_ct2_model(_ct2(_synthetic_variables(), spec="TransformerSpec"), tmp_path / "mt.bin")
    with pytest.raises(CT2FormatError, match="spec 'TransformerSpec' is not a WhisperSpec"):
        convert_ct2_whisper(other, tmp_path / "out", tokenizer_json=tok)
    variables = _synthetic_variables()
    variables["decoder/layer_0/attention/linear_1/bias"][0] = 1
    bad = write_ct2_model(_ct2(variables), tmp_path / "kbias.bin")
    with pytest.raises(CT2FormatError, match="decoder/layer_0/attention has a non-zero k bias"):
        convert_ct2_whisper(bad, tmp_path / "out", tokenizer_json=tok)
    assert not (tmp_path / "out").exists()
