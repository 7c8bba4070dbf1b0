"""Errors raised for bad user input.

Everything a user can get wrong (a path, a config key, a value, a file's contents) raises a subclass of
:class:`DreamdataError` whose message names the offending thing and what was expected. The CLI prints
these messages without a traceback; anything else is a bug and keeps its traceback.
"""


class DreamdataError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ConfigError(DreamdataError):
    """A configuration key or value is unknown or invalid."""


class DataError(DreamdataError):
    """A dataset path, file or option is missing, unreadable or inconsistent."""


class CheckpointError(DreamdataError):
    """A run directory or checkpoint is missing, incomplete or does not match the config."""


class DiskFullError(DreamdataError):
    """A file could not be written because the disk (or the user's quota) is full."""


class TrainingDivergedError(DreamdataError):
    """Training produced non-finite losses, gradients or weights (e.g. a learning rate far too high)."""
