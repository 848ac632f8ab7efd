"""Errors that the CLI reports as one clear line, without a traceback."""


class CllnError(Exception):
    """Base class for every error meant for the user rather than the developer."""


class ConfigError(CllnError):
    """A config file, a dataset or a CLI value is invalid.

    Parameters
    ----------
    source : str
        The file (or ``"--flag"``) the bad value came from.
    key : str
        The dotted key (``"learning.eta"``) or a location (``"row 3"``).
    why : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, source, key, why):
        self.source, self.key, self.why = str(source), key, why
        where = f"{self.source}: {key}" if key else self.source
        super().__init__(f"{where}: {why}")


class SolverError(CllnError):
    """A golden model could not compute a result (e.g. Newton did not converge)."""
