"""The one exception type a user can cause; the CLI prints it as a single line and exits non-zero."""


class PeftbenchError(Exception):
    """A problem with the user's input (config, data, paths) that the user can fix.

    The message must be one line that says what is wrong and, where possible, what to do.
    """
