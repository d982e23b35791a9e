"""The error raised for a property that cannot be read or built."""


class SpecError(ValueError):
    """A malformed or unsupported property; the message names file, line and column."""
