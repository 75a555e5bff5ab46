"""Manifest targets that tokenise differently from the official code: one warning per manifest, pinned ids.

The official code tokenises ``text + "</s>"`` with transformers 4.28's slow ``LlamaTokenizer``: the text is
split at special tokens and each chunk goes through ``sp_model.encode`` (SentencePiece's dummy prefix adds a
``▁`` to every chunk, and a leading space becomes one more ``▁``). ``official_ids`` below applies those rules
with SentencePiece directly; ahamask's ids come from transformers 5's tokenizer (``encode_piece``).
"""

from __future__ import annotations

import json
import logging
import re

import pytest
import sentencepiece as spm

from ahamask.data.manifest import load_manifest, unusual_targets
from ahamask.models.loading import load_tokenizer
from ahamask.models.prompts import encode_piece

SPECIALS = {"</s>": 2, "<s>": 1}


def official_ids(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """4.28's slow tokenizer: split at special tokens, ``sp.encode`` each non-empty chunk."""
    ids: list[int] = []
    for chunk in re.split(r"(</s>|<s>)", text):
        if chunk in SPECIALS:
            ids.append(SPECIALS[chunk])
        elif chunk:
            ids.extend(sp.encode(chunk))
    return ids


@pytest.fixture(scope="module")
def tokenizers(tiny_bundle):
    return load_tokenizer(str(tiny_bundle / "llama")), spm.SentencePieceProcessor(
        model_file=str(tiny_bundle / "llama" / "tokenizer.model")
    )


def test_plain_targets_tokenise_as_the_official(tokenizers):
    fast, sp = tokenizers
    for text in ["Male", "Female", "the quick brown fox", "hello world 0 1 2"]:
        assert encode_piece(fast, text + "</s>") == official_ids(sp, text + "</s>"), text


@pytest.mark.parametrize("text", [" Male", "</s>Male", "<s>Male", "Ma</s>le"])
def test_unusual_targets_differ_by_one_leading_piece(tokenizers, text):
    # ahamask drops a leading space and gives text after a special token no '▁'; 4.28 keeps one '▁' more.
    fast, sp = tokenizers
    ours, theirs = encode_piece(fast, text + "</s>"), official_ids(sp, text + "</s>")
    assert ours != theirs
    assert len(theirs) - len(ours) in (0, 1)  # the '▁' piece is separate or merged into the next piece
    assert [i for i in ours if i in SPECIALS.values()] == [i for i in theirs if i in SPECIALS.values()]
    if text.startswith(" "):
        assert ours == encode_piece(fast, text.lstrip() + "</s>")  # the space is simply gone


def test_unusual_targets_are_reported_once_per_manifest(tmp_path, caplog):
    texts = ["Male", " Male", "Ma</s>le", "<s>Female", "fine"]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"annotation": [{"path": "a.wav", "text": t} for t in texts]}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"annotation": [{"path": "a.wav", "text": " Female"}]}))
    with caplog.at_level(logging.WARNING, logger="ahamask.data.manifest"):
        entries = load_manifest(manifest)
        load_manifest(manifest)  # the same manifest again: no second warning
        load_manifest(other)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ahamask.data.manifest"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"{manifest}: 3 targets tokenise differently")
    assert "entry 1 (' Male'), entry 2 ('Ma</s>le'), entry 3 ('<s>Female')" in warnings[0]
    assert "A leading space is dropped" in warnings[0] and "special ids 2 / 1" in warnings[0]
    assert warnings[1].startswith(f"{other}: 1 targets") and "entry 0 (' Female')" in warnings[1]
    assert [e["text"] for e in entries] == texts  # reported, not changed
    assert unusual_targets(list(enumerate(entries))) == [(1, " Male"), (2, "Ma</s>le"), (3, "<s>Female")]
