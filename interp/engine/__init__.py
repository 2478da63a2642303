"""The engine: interventions declare edits (`core`), `plan` collects and checks them, `walk` applies them at
the sites of every forward (the only nnsight code), `decode` lets HF generate drive decoding, `run` ties
them together as `intervene(vlm, *interventions)`."""

from .core import (Context, Cut, EditOutput, EditProbs, Intervention, Prefix, ReadProbs, TapInputs,
                   repeat_layout)
from .decode import GenerateOutput
from .run import ForwardOutput, Run, intervene

__all__ = ["Context", "Cut", "EditOutput", "EditProbs", "Intervention", "Prefix", "ReadProbs", "TapInputs",
           "GenerateOutput", "ForwardOutput", "Run", "intervene", "repeat_layout"]
