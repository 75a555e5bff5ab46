"""Synthetic audio world for the laptop-scale AHAMask demo (``make demo``).

Symbol sequences "spoken" by a low or high voice stand in for LibriSpeech: the symbol words are the
transcript, the register is the analogue of gender. See :mod:`ahamask.synth.world` for the layout of
a built world and :mod:`ahamask.synth.instructions` for the prompts.
"""

from ahamask.synth.audio import (
    ALPHABET,
    REGISTERS,
    SYMBOL_WORDS,
    ClipSpec,
    render_clip,
    sample_clip_spec,
    write_wav,
)
from ahamask.synth.instructions import (
    HELDOUT_INSTRUCTIONS,
    PROMPT_TEMPLATE,
    TRAIN_INSTRUCTIONS,
    prompt_files,
    task_instructions,
    wrapped_halves,
)
from ahamask.synth.world import (
    DEFAULT_TASKS,
    TASKS,
    TaskSpec,
    WorldInfo,
    answer_words,
    build_world,
    detect_task,
    load_world,
    make_target,
    parse_output,
    world_corpus,
)

__all__ = [
    "ALPHABET",
    "DEFAULT_TASKS",
    "HELDOUT_INSTRUCTIONS",
    "PROMPT_TEMPLATE",
    "REGISTERS",
    "SYMBOL_WORDS",
    "TASKS",
    "TRAIN_INSTRUCTIONS",
    "ClipSpec",
    "TaskSpec",
    "WorldInfo",
    "answer_words",
    "build_world",
    "detect_task",
    "load_world",
    "make_target",
    "parse_output",
    "prompt_files",
    "render_clip",
    "sample_clip_spec",
    "task_instructions",
    "world_corpus",
    "wrapped_halves",
    "write_wav",
]
