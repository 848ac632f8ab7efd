"""Temporary changes to the process environment, for the external tools clln drives."""

import contextlib
import os


@contextlib.contextmanager
def patched_environ(changes):
    """Apply ``{name: value}`` to ``os.environ`` (None unsets it), then restore every name."""
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
