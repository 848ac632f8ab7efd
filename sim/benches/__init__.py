"""cocotb benches of the gateware (``clln.sim.benches``).

:func:`~clln.sim.benches.runner.verify` builds the fabric's Verilog, runs
:mod:`.fabric_bench` in Icarus or Verilator and returns the comparison with the
fixed-point golden model.
"""
