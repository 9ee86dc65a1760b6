"""``RaylmError``: the base of every error raylm raises for something a user can fix (a config field,
a file, a request, a checkpoint or artifact), with a message that names it.

A ``ValueError`` subclass, so code that caught ``ValueError`` keeps working; the CLI catches it once
and exits 2 with the message (no traceback: the message is the whole story).
"""


class RaylmError(ValueError):
    """A problem raylm can name: the message says which field or file, and what is wrong."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C reached a stage that saved its state and can be continued; the message says how. A
    ``KeyboardInterrupt``, so run records say interrupted and the CLI exits 130, as for any Ctrl-C."""
