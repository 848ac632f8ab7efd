"""The serial fabric: one edge term per clock cycle, for the smallest FPGAs.

``[fabric] serial = true`` folds the whole tick onto one edge unit and one node unit. The
tick walks a schedule fixed at elaboration, node by node: for every settling node n and
each network, the terms of n's edges are summed into one accumulator, and on the last of
them the node unit writes n's new voltage into a register of the next state. Every edge is
so visited once from each settling end (its term is computed twice, which costs cycles but
no per-node accumulators); its gate is updated on its last visit, after which no visit of
the tick reads it. A final cycle commits the next state, the drives and the clamp, so a
tick has the same bits as the parallel fabric's (``docs/semantics.md``).

State stays in registers, so the ports are those of :class:`~.fabric.Fabric`.
"""

from collections import namedtuple

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data

from .fabric import Fabric, _or, edge_term, gate_step, mux_tree, node_step, overdrive

__all__ = ["SerialFabric", "Visit", "serial_schedule"]

#: One cycle of the serial schedule: accumulate the term of ``edge`` into ``node`` in
#: network ``net`` (0 free, 1 clamped); ``other`` is the edge's other end, ``plus`` is 1
#: when ``node`` is the edge's ``b`` end (the term counts positive). ``first``/``last``
#: open and close a node's sum; ``gate`` updates the edge's gate (when learning); ``term``
#: is 0 for a gate-only visit (an edge with no settling end).
Visit = namedtuple("Visit", "node other edge net plus first last gate term")


def serial_schedule(cfg):
    """The visits of one tick, in order (the commit cycle that follows is not listed).

    Parameters
    ----------
    cfg : clln.config.Config

    Returns
    -------
    list of Visit
    """
    edges = [tuple(int(x) for x in e) for e in cfg.network.edges]
    driven = set(cfg.driven_nodes())
    incident = {n: [] for n in range(cfg.network.n_nodes)}
    for e, (a, b) in enumerate(edges):
        incident[a].append(e)
        incident[b].append(e)
    visits = []
    for n in range(cfg.network.n_nodes):
        if n in driven:
            continue
        for net in (0, 1):
            group = incident[n]
            for i, e in enumerate(group):
                a, b = edges[e]
                visits.append(Visit(n, a if n == b else b, e, net, int(n == b), int(i == 0),
                                    int(i == len(group) - 1), 0, 1))
    last_visit = {v.edge: i for i, v in enumerate(visits)}
    for i in last_visit.values():
        visits[i] = visits[i]._replace(gate=1)
    for e, (a, b) in enumerate(edges):
        if e not in last_visit:                      # both ends driven: only the gate
            visits.append(Visit(a, b, e, 0, 0, 0, 0, 1, 0))
    return visits


class SerialFabric(Fabric):
    """A :class:`~.fabric.Fabric` with one edge unit and one node unit.

    Parameters are those of :class:`~.fabric.Fabric`.

    Attributes
    ----------
    schedule : list of Visit
        The visits of one tick; ``cycles_per_tick = len(schedule) + 1``.
    """

    def __init__(self, cfg, fmt=None, seed=None):
        super().__init__(cfg, fmt, seed)
        self.schedule = serial_schedule(cfg)
        self.edge_units = 1
        self.cycles_per_tick = len(self.schedule) + 1

    def elaborate(self, platform):
        f = self.fmt
        m = Module()
        N, E, S = self.n_nodes, self.n_edges, self.cycles_per_tick
        st = self._state(m)
        vf, vc, g = st.vf, st.vc, st.g

        # The schedule as registered fields: ``cur`` holds the visit of cycle ``step``.
        layout = data.StructLayout({
            "node": range(N), "other": range(N), "edge": range(E), "net": 1, "plus": 1,
            "first": 1, "last": 1, "gate": 1, "term": 1, "vt": signed(f.v_bits)})
        rows = [dict(v._asdict(), vt=int(f.vt_q[v.edge])) for v in self.schedule]
        rows.append({"node": 0, "other": 0, "edge": 0, "net": 0, "plus": 0, "first": 0,
                     "last": 0, "gate": 0, "term": 0, "vt": 0})         # the commit cycle
        step = Signal(range(S))
        cur = Signal(layout, init=rows[0])
        end = step == S - 1
        nxt = Mux(end, 0, step + 1)
        learn_q = Signal()
        learn = Mux(step == 0, self.learn, learn_q)
        with m.If(self.run):
            m.d.sync += step.eq(nxt)
            with m.If(step == 0):
                m.d.sync += learn_q.eq(self.learn)
            with m.Switch(nxt):
                for i, row in enumerate(rows):
                    with m.Case(i):
                        m.d.sync += cur.eq(layout.const(row))

        # Edge unit: the term of one edge in one network.
        vn_f, vo_f = mux_tree(cur.node, vf), mux_tree(cur.other, vf)
        vn_c, vo_c = mux_tree(cur.node, vc), mux_tree(cur.other, vc)
        g_e = Signal(signed(f.g_bits))
        m.d.comb += g_e.eq(mux_tree(cur.edge, g))
        vn = Signal(signed(f.v_bits))
        vo = Signal(signed(f.v_bits))
        m.d.comb += [vn.eq(Mux(cur.net, vn_c, vn_f)), vo.eq(Mux(cur.net, vo_c, vo_f))]
        ov = overdrive(m, f, g_e, cur.vt)
        s, s_clipped = edge_term(m, f, ov, Mux(cur.plus, vo, vn), Mux(cur.plus, vn, vo), "x")

        # Node unit: the running sum of the node's terms and, on its last term, its update.
        acc = Signal(signed(self.acc_width))
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(Mux(cur.first, 0, acc) + Mux(cur.plus, s, -s))
        v_new, node_flags = node_step(m, f, vn, total, "x")
        settling = sorted({v.node for v in self.schedule if v.term})
        nf = {n: Signal(signed(f.v_bits), name=f"vf_next{n}") for n in settling}
        nc = {n: Signal(signed(f.v_bits), name=f"vc_next{n}") for n in settling}
        with m.If(self.run):
            m.d.sync += acc.eq(total)
            with m.If(cur.last):
                with m.Switch(cur.node):
                    for n in settling:
                        with m.Case(n):
                            with m.If(cur.net):
                                m.d.sync += nc[n].eq(v_new)
                            with m.Else():
                                m.d.sync += nf[n].eq(v_new)

        # The gate of the visited edge (drops a - b of both networks at t).
        d_f = Mux(cur.plus, vo_f - vn_f, vn_f - vo_f)
        d_c = Mux(cur.plus, vo_c - vn_c, vn_c - vo_c)
        g_next, dg_clipped = gate_step(m, f, g_e, d_f, d_c)
        with m.If(self.run & cur.gate & learn):
            with m.Switch(cur.edge):
                for e in range(E):
                    with m.Case(e):
                        m.d.sync += g[e].eq(g_next)

        # Commit: next state of the settling nodes, drives, then the clamp.
        driven_index = {n: i for i, n in enumerate(self.driven_nodes)}
        vf_next, vc_next = list(vf), list(vc)
        for n in range(N):
            if n in driven_index:
                vf_next[n] = vc_next[n] = st.drive[driven_index[n]]
            elif n in nf:
                vf_next[n], vc_next[n] = nf[n], nc[n]
        clamp_flags, out_values = self._clamp(m, st, vc_next)
        commit = Signal()
        m.d.comb += commit.eq(self.run & end)
        tick_flags = Signal(5)
        m.d.comb += tick_flags.eq(
            (s_clipped & cur.term)
            | Mux(cur.last, node_flags, 0)
            | Mux(end & _or(clamp_flags), 8, 0)
            | Mux(cur.gate & learn & dg_clipped, 16, 0))
        self._finish(m, st, commit, tick_flags, vf_next, vc_next, out_values)
        return m
