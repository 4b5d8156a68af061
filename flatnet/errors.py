"""flatnet's own error type: what the CLI catches and prints for a person."""


class FlatnetError(Exception):
    """An error a person can act on; the message names the object and the fix."""
