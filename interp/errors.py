"""One exception family. Messages name the thing, what was expected, what was given (a shape or a dtype, never
a dumped tensor), and the fix.

    InterpError                 every error interp raises (catch this one)
    ├── InputError (ValueError) bad user input: groups, layers, weights, ratios, batches, load arguments
    │   └── NoEffectError       an intervention that would do nothing: it selects nothing, or another one in the
    │                           composition cancels it (cuts every edge it injects into)
    ├── UnsupportedModelError   the model class has no adapter
    ├── SiteError               a site could not be found, or an edit never ran
    └── CheckpointError         a model directory or VIF checkpoint is missing files, corrupt, or for another model
    InterpWarning (UserWarning) something legitimate that may not be what was meant (a partly cancelled
                                injection, clean and corrupt runs predicting the same token)

They live here (`interp.errors.InputError`, ...); `interp.InterpError` is the base at the top level.
"""

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class InterpError(Exception):
    """Base class of every error raised by interp."""


class UnsupportedModelError(InterpError):
    """The model class has no adapter."""


class InputError(InterpError, ValueError):
    """Bad user input: images, questions, groups, layers, weights, ratios, batches, load arguments."""


class NoEffectError(InputError):
    """An intervention would do nothing: it selects no edge / token, or another intervention cancels it."""


class SiteError(InterpError):
    """A site (attention call, mask builder, layer output) could not be found or did nothing."""


class CheckpointError(InterpError):
    """A checkpoint is missing, corrupt, or made for a different model."""


class InterpWarning(UserWarning):
    """A legitimate input whose result may not be what was meant; the message says what actually happened."""


def warn(message: str, category=InterpWarning) -> None:
    """`warnings.warn` attributed to the first caller outside interp (the user's line, however deep the call)."""
    level, f = 2, sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PACKAGE + os.sep):
        f, level = f.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
