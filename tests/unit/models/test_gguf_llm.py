"""The GGUF LLM cache: a plain transformers folder (tied lm_head dropped and re-tied, no quantization_config).

No download: the writer is checked on tiny random models; the real GGUF path runs on a tiny GGUF file
written with the ``gguf`` package and is skipped where the ``small`` extra is not installed.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ahamask.models.gguf_llm import cache_gguf_llm, load_gguf_llm, require_small_extra, save_plain_llm

CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _tiny_llama(tied: bool, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # What transformers' GGUF loader leaves on the config (save_pretrained then refuses the model).
    model.config.quantization_config = {"quant_method": "gguf"}
    return model


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(37)} | {"<|im_start|>": 37, "<|im_end|>": 38, "<unk>": 39}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", bos_token="<|im_start|>")
    tok.chat_template = CHAT
    return tok


@pytest.mark.parametrize("tied", [True, False])
def test_plain_folder_reloads_equal(tmp_path, tied):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = _tiny_llama(tied)
    save_plain_llm(model, _tiny_tokenizer(), tmp_path / "llm")
    config = json.loads((tmp_path / "llm" / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["architectures"], config["tie_word_embeddings"]) == (
        "llama",
        ["LlamaForCausalLM"],
        tied,
    )
    with safe_open(str(tmp_path / "llm" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert ("lm_head.weight" in keys) is not tied
    assert "model.embed_tokens.weight" in keys
    assert len(keys) == len(model.state_dict()) - int(tied)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llm").eval()
    assert (reloaded.lm_head.weight is reloaded.model.embed_tokens.weight) is tied
    assert getattr(reloaded.config, "quantization_config", None) is None
    ids = torch.tensor([[1, 5, 9, 33, 2]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    tok = AutoTokenizer.from_pretrained(tmp_path / "llm")
    assert tok.chat_template == CHAT
    assert tok("w3 w7").input_ids == [3, 7]
    assert oct((tmp_path / "llm" / "model.safetensors").stat().st_mode & 0o777) == "0o644"


def test_existing_folder_is_refused_unless_overwrite(tmp_path):
    model = _tiny_llama(True)
    save_plain_llm(model, None, tmp_path / "llm")
    with pytest.raises(FileExistsError, match="llm exists"):
        save_plain_llm(model, None, tmp_path / "llm")
    save_plain_llm(_tiny_llama(True, seed=1), None, tmp_path / "llm", overwrite=True)
    with safe_open(str(tmp_path / "llm" / "model.safetensors"), "pt") as f:
        saved = f.get_tensor("model.embed_tokens.weight")
    assert torch.equal(saved, _tiny_llama(True, seed=1).model.embed_tokens.weight)
    assert not torch.equal(saved, model.model.embed_tokens.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["llm"]  # no temp folder left behind


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    # A None entry in sys.modules makes every import of the name fail, installed or not.
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError) as err:
        require_small_extra()
    assert str(err.value).startswith("reading a GGUF file needs gguf")
    assert str(err.value).endswith(": pip install -e .[small]")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ImportError, match=r"pip install -e \.\[small\]$"):
        load_gguf_llm(tmp_path / "m.gguf")
    with pytest.raises(FileNotFoundError, match="gguf_path: no such file: .*absent.gguf"):
        load_gguf_llm(tmp_path / "absent.gguf")


def _write_tiny_gguf(path, seed: int = 0) -> None:
    """A 2-layer llama GGUF (float32 tensors, grouped-query attention, a 32-token BPE vocabulary)."""
    import gguf

    rng = np.random.default_rng(seed)
    d, heads, kv, ffn, layers = 16, 4, 2, 32, 2
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *"abcdefghijklmnopqrstuvwxyz ", "ab", "cd"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(layers)
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["a b", "c d"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def add(name, *shape):
        w.add_tensor(name, (0.3 * rng.standard_normal(shape)).astype(np.float32))

    add("token_embd.weight", len(tokens), d)
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
        add(f"blk.{i}.attn_q.weight", d, d)
        add(f"blk.{i}.attn_k.weight", kv * d // heads, d)
        add(f"blk.{i}.attn_v.weight", kv * d // heads, d)
        add(f"blk.{i}.attn_output.weight", d, d)
        add(f"blk.{i}.ffn_gate.weight", ffn, d)
        add(f"blk.{i}.ffn_up.weight", ffn, d)
        add(f"blk.{i}.ffn_down.weight", d, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_real_gguf_round_trip(tmp_path):
    pytest.importorskip("gguf", reason="the small extra (gguf) is not installed")
    pytest.importorskip("accelerate", reason="the small extra (accelerate) is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _write_tiny_gguf(tmp_path / "tiny.gguf")
    info = cache_gguf_llm(tmp_path / "tiny.gguf", tmp_path / "cached")
    assert (info["layers"], info["heads"], info["kv_heads"], info["head_dim"], info["hidden"]) == (
        2,
        4,
        2,
        4,
        16,
    )
    assert info["parameters"] == 32 * 16 + 16 + 2 * (2 * 16 + 16 * 16 * 2 + 8 * 16 * 2 + 3 * 32 * 16)
    gguf_model, gguf_tok = load_gguf_llm(tmp_path / "tiny.gguf")
    cached = AutoModelForCausalLM.from_pretrained(tmp_path / "cached").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "cached")
    ids = tok("abcd xyz", return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tok("abcd xyz", return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(cached(ids).logits, gguf_model(ids).logits, rtol=0, atol=0)
    assert cached.lm_head.weight is cached.model.embed_tokens.weight
