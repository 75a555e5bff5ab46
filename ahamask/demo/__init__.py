"""The laptop-scale AHAMask experiment behind ``make demo``.

A tiny SALMONN-architecture model is trained from scratch to follow instructions in the synthetic world
(:mod:`ahamask.synth`), frozen, and given one head mask per task trained with no instruction; held-out
clips are then decoded with held-out instructions, with no instruction, with each mask and with random
masks of the same size, and the results are written as a report. Stages:
:mod:`~ahamask.demo.base_model` (stage 1-2), :mod:`~ahamask.demo.masks` (3), :mod:`~ahamask.demo.sweep` (4),
:mod:`~ahamask.demo.report` (5), run in order by :func:`~ahamask.demo.pipeline.run_demo`.
"""

from ahamask.demo.pipeline import STAGES, DemoResult, run_demo
from ahamask.demo.settings import DemoSettings, EvalSettings, MaskSettings, preset

__all__ = ["STAGES", "DemoResult", "DemoSettings", "EvalSettings", "MaskSettings", "preset", "run_demo"]
