"""Golden models of a contrastive local learning network (``clln.sim``).

- :mod:`.quasistatic`: the physics truth (Newton on Kirchhoff's laws).
- :mod:`.dynamic`: the tick semantics in float64.
- :mod:`.fixed`: the tick semantics in the gateware's exact integer arithmetic.

The golden models never import gateware: they are the independent reference.
"""
