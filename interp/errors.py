"""One exception family. Messages name the thing, what was expected, and the fix."""


class InterpError(Exception):
    """Base class of every error raised by interp."""


class UnsupportedModelError(InterpError):
    """The model class has no adapter."""


class InputError(InterpError, ValueError):
    """Bad user input: images, questions, masks, ratios, records."""


class SiteError(InterpError):
    """A site (attention call, mask builder, layer output) could not be found or did nothing."""


class CheckpointError(InterpError):
    """A checkpoint is missing, corrupt, or made for a different model."""
