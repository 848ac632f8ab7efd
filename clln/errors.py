"""Errors that the CLI reports as one clear line, without a traceback."""


class CllnError(Exception):
    """Base class for every error meant for the user rather than the developer."""


#: Longest reason a ConfigError gives (characters).
MAX_WHY = 400


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
        if len(why) > MAX_WHY:              # a value echoed back can be huge
            why = why[:MAX_WHY - 3] + "..."
        self.source, self.key, self.why = str(source), key, why
        where = f"{self.source}: {key}" if key else self.source
        super().__init__(f"{where}: {why}")


class SolverError(CllnError):
    """A golden model could not compute a result (e.g. Newton did not converge)."""


def decode_utf8(raw, source, key):
    """``raw`` bytes as UTF-8 text (TOML and CSV files must be UTF-8), else a
    :class:`ConfigError` naming the line and the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(source, key, f"line {line}: byte 0x{raw[e.start]:02x} is not "
                          "UTF-8 (save the file as UTF-8)") from None
