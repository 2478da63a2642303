"""`interp.vif` is an alias of `interp.methods.vif` (the same module object), so that both
`interp.vif.train(...)` and `python -m interp.vif.train ...` work: importing this package replaces itself in
`sys.modules` with `interp.methods.vif`, whose `__path__` then resolves `interp.vif.train` to
`interp/methods/vif/train.py`."""

import sys

from interp.methods import vif as _vif

sys.modules[__name__] = _vif
