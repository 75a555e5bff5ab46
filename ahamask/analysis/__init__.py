"""Head-level analyses of audio LLMs that need no training: listening probes, steering, temporal read-outs.

Every analysis talks to a model through the backbone interface (:class:`ahamask.models.backbone.AudioLLM`),
so it runs on SALMONN, Qwen2-Audio and Audio Flamingo 3 alike.
"""
