"""`interp.intervene` and the intervention protocol; the engine itself lives in `interp.engine` (how an
intervention declares its edits: `interp.engine.core`)."""

from .engine import (Context, Cut, EditOutput, EditProbs, ForwardOutput, GenerateOutput, Intervention, Prefix,
                     ReadProbs, Run, TapInputs, intervene)

__all__ = ["Context", "Cut", "EditOutput", "EditProbs", "ForwardOutput", "GenerateOutput", "Intervention",
           "Prefix", "ReadProbs", "Run", "TapInputs", "intervene"]
