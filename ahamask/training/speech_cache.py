"""Re-export: the speech-embedding cache moved to :mod:`ahamask.models.speech_cache`.

Training, evaluation and the instruction sweep share one cache (and one disk format), so it lives beside the
model it fingerprints; this module keeps ``ahamask.training.speech_cache`` imports working.
"""

from ..models.speech_cache import FRONT_END_MODULES, SpeechEmbeddingCache, model_fingerprint, tensor_digest

__all__ = ["FRONT_END_MODULES", "SpeechEmbeddingCache", "model_fingerprint", "tensor_digest"]
