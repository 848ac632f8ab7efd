"""clln: FPGA digital twins of self-learning analog networks."""

__version__ = "0.1.0"
