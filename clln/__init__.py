"""clln: FPGA digital twins of self-learning analog networks.

The Python interface (docs/api.md): ``clln.load(config)`` gives a :class:`Network` to
train, generate, verify, build and run; ``clln.sweep(file)`` runs a sweep.
"""

from .api import Network, Result, load, sweep

__version__ = "0.1.0"
__all__ = ["Network", "Result", "load", "sweep", "__version__"]
