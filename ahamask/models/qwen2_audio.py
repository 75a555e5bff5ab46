"""Qwen2-Audio (Qwen/Qwen2-Audio-7B-Instruct, Qwen/Qwen2-Audio-7B) as an ahamask backbone.

transformers' ``Qwen2AudioForConditionalGeneration`` and its processor, loaded from a local folder; nothing
forked. The audio path is the one ``Qwen2AudioModel.forward`` runs: Whisper log-mel features padded to the
30 s window (the encoder takes exactly ``2 * max_source_positions`` frames, 3000 for the real model), an
encoder attention mask over the clip's own frames, the average-pooled encoder states through the projector,
and ``((frames - 1) // 2 + 1 - 2) // 2 + 1`` audio tokens per clip (one per 40 ms, 750 for 30 s).

Prompts: ``variant: instruct`` uses the folder's chat template (``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>``
in the user turn, the default system turn; answers end at ``<|im_end|>``); ``variant: base`` is
Qwen2-Audio-7B's plain ``<|audio_bos|><|AUDIO|><|audio_eos|>`` prefix followed by the instruction (answers end
at ``<|endoftext|>``).
"""

from __future__ import annotations

import torch

from .frontend import whisper_features_batched
from .hf_audio_llm import AudioTooLongError, HFAudioLLM

__all__ = ["Qwen2Audio", "BASE_AUDIO_PREFIX"]

BASE_AUDIO_PREFIX = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def encoder_token_counts(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mel frames -> (encoder positions after the stride-2 conv, audio tokens after the pool)."""
    after_conv = (frames - 1) // 2 + 1
    return after_conv, (after_conv - 2) // 2 + 1


class Qwen2Audio(HFAudioLLM):
    """Qwen2-Audio-7B(-Instruct): Whisper-large-v3-style encoder, linear projector, Qwen-7B (32 x 32 heads)."""

    hf_class = "Qwen2AudioForConditionalGeneration"
    audio_placeholder = "<|AUDIO|>"
    variants = ("instruct", "base")

    def _check_front_end(self) -> None:
        self._expected_frames()

    def prompt_for(self, instruction: str = "") -> str:
        """Chat template (instruct) or the plain audio prefix + instruction (base); ``""``: the audio only."""
        if self.cfg.variant == "base":
            return BASE_AUDIO_PREFIX + instruction.strip()
        return super().prompt_for(instruction)

    def _encoder_mask(self, positions: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The encoder's attention mask over each clip's own positions, as ``Qwen2AudioModel.forward`` builds it."""
        from transformers.masking_utils import create_bidirectional_mask

        keep = (torch.arange(width, device=self.device)[None, :] < positions[:, None]).long()
        dummy = torch.zeros(len(positions), width, 1, dtype=dtype, device=self.device)
        return create_bidirectional_mask(
            config=self.model.model.audio_tower.config, inputs_embeds=dummy, attention_mask=keep
        )

    def _encode_rows(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        extractor = self.feature_extractor
        limit = int(extractor.n_samples)
        lengths = torch.tensor([len(w) for w in waves])
        if int(lengths.max()) > limit:
            raise AudioTooLongError(
                f"a {int(lengths.max()) / extractor.sampling_rate:.2f} s clip is longer than Qwen2-Audio's "
                f"{extractor.chunk_length} s window (cut or split it; the dataset cuts at whisper_path's chunk_length)"
            )
        raw = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        features = whisper_features_batched(
            raw, extractor, self.device
        )  # [batch, mels, 2 * max_source_positions]
        frames = (lengths + extractor.hop_length - 1) // extractor.hop_length  # the extractor's frame mask
        positions, tokens = encoder_token_counts(frames.to(self.device))
        tower = self.model.model.audio_tower
        dtype = tower.conv1.weight.dtype
        mask = self._encoder_mask(positions, features.shape[-1] // 2, dtype)
        hidden = tower(features.to(dtype), attention_mask=mask).last_hidden_state
        embeds = self.model.model.multi_modal_projector(hidden)
        return [embeds[i, : int(n)] for i, n in enumerate(tokens)]
