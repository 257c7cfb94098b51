"""The one exception type for bad input: it reaches the user as a single message, not a traceback."""

from hydra.errors import CompactHydraException


class XdtError(CompactHydraException):
    """A problem with the user's configuration, data or environment.

    The message must name the file, config key or value at fault and, where there is one, the fix.
    Hydra prints a CompactHydraException as its message alone (the full traceback appears only with
    HYDRA_FULL_ERROR=1), so raising this is all a command needs to do to fail cleanly.
    """
