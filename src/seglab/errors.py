"""Errors seglab raises for problems a user can fix; the CLI prints them without a stack trace."""


class SeglabError(Exception):
    """Base class: a problem with the user's input, data or configuration, with the fix in its message."""


class ConfigError(SeglabError, ValueError):
    """An invalid configuration key or value."""


class DataError(SeglabError, ValueError):
    """A problem with a data file or folder; the message names the file."""


class CheckpointError(SeglabError, ValueError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""
