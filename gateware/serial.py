"""The serial fabric: one edge term per clock cycle, for the smallest FPGAs.

``[fabric] serial = true`` folds the whole tick onto one edge unit and one node unit. The
tick walks a schedule fixed at elaboration, node by node: for every settling node n and
each network, the terms of n's edges are summed into one accumulator, and on the last of
them the node unit writes n's new voltage into a register of the next state. Every edge is
so visited once from each settling end (its term is computed twice, which costs cycles but
no per-node accumulators); its gate is updated on its last visit, after which no visit of
the tick reads it. A visit takes two pipeline stages: the edge unit (operands, edge term,
gate step) and the node unit (sum, node update, new gate). After the last visit one cycle
drains the pipeline and one commits the next state, the drives and the clamp, so a tick
has the same bits as the parallel fabric's (``docs/semantics.md``).

State stays in registers, so the ports are those of :class:`~.fabric.Fabric`.
"""

from collections import namedtuple
from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data

from .fabric import (Fabric, _or, edge_term, gate_apply, gate_delta, mux_tree, node_step,
                     overdrive)

__all__ = ["SerialFabric", "Visit", "serial_schedule"]

#: One cycle of the serial schedule: accumulate the term of ``edge`` into ``node`` in
#: network ``net`` (0 free, 1 clamped); ``other`` is the edge's other end, ``plus`` is 1
#: when ``node`` is the edge's ``b`` end (the term counts positive). ``first``/``last``
#: open and close a node's sum; ``gate`` updates the edge's gate (when learning); ``term``
#: is 0 for a gate-only visit (an edge with no settling end).
Visit = namedtuple("Visit", "node other edge net plus first last gate term")


def serial_schedule(cfg):
    """The visits of one tick, in order (the drain and commit cycles are not listed).

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
        The visits of one tick; ``cycles_per_tick = len(schedule) + 2``.
    """

    def __init__(self, cfg, fmt=None, seed=None):
        super().__init__(cfg, fmt, seed)
        self.schedule = serial_schedule(cfg)
        self.edge_units = 1
        self.cycles_per_tick = len(self.schedule) + 2

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
        idle = {"node": 0, "other": 0, "edge": 0, "net": 0, "plus": 0, "first": 0,
                "last": 0, "gate": 0, "term": 0, "vt": 0}
        rows += [idle, idle]                        # drain the pipeline, then commit
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

        # Stage 1, edge unit: the term of one edge in one network, and its gate step.
        vn_f, vo_f = mux_tree(cur.node, vf), mux_tree(cur.other, vf)
        vn_c, vo_c = mux_tree(cur.node, vc), mux_tree(cur.other, vc)
        g_e = Signal(signed(f.g_bits))
        m.d.comb += g_e.eq(mux_tree(cur.edge, g))
        vn = Signal(signed(f.v_bits))
        vo = Signal(signed(f.v_bits))
        m.d.comb += [vn.eq(Mux(cur.net, vn_c, vn_f)), vo.eq(Mux(cur.net, vo_c, vo_f))]
        ov = overdrive(m, f, g_e, cur.vt)
        s, s_clipped = edge_term(m, f, ov, Mux(cur.plus, vo, vn), Mux(cur.plus, vn, vo), "x")
        dg, dg_clipped = gate_delta(m, f, Mux(cur.plus, vo_f - vn_f, vn_f - vo_f),
                                    Mux(cur.plus, vo_c - vn_c, vn_c - vo_c))

        # Pipeline registers between the stages (they hold while ``run`` is low).
        q = SimpleNamespace(
            s=Signal(signed(f.term_bits), name="q_s"), plus=Signal(name="q_plus"),
            first=Signal(name="q_first"), last=Signal(name="q_last"),
            node=Signal(range(N), name="q_node"), net=Signal(name="q_net"),
            vn=Signal(signed(f.v_bits), name="q_vn"), gate=Signal(name="q_gate"),
            edge=Signal(range(E), name="q_edge"), g=Signal(signed(f.g_bits), name="q_g"),
            dg=Signal(signed(f.dg_bits), name="q_dg"), flags=Signal(5, name="q_flags"))
        with m.If(self.run):
            m.d.sync += [
                q.s.eq(s), q.plus.eq(cur.plus), q.first.eq(cur.first), q.last.eq(cur.last),
                q.node.eq(cur.node), q.net.eq(cur.net), q.vn.eq(vn),
                q.gate.eq(cur.gate & learn), q.edge.eq(cur.edge), q.g.eq(g_e), q.dg.eq(dg),
                q.flags.eq(Mux(s_clipped & cur.term, 1, 0)
                           | Mux(cur.gate & learn & dg_clipped, 16, 0)),
            ]

        # Stage 2, node unit: the running sum of the node's terms and, on its last term,
        # its update; the new gate of the visited edge.
        acc = Signal(signed(self.acc_width))
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(Mux(q.first, 0, acc) + Mux(q.plus, q.s, -q.s))
        v_new, node_flags = node_step(m, f, q.vn, total, "x")
        settling = sorted({v.node for v in self.schedule if v.term})
        nf = {n: Signal(signed(f.v_bits), name=f"vf_next{n}") for n in settling}
        nc = {n: Signal(signed(f.v_bits), name=f"vc_next{n}") for n in settling}
        g_next = gate_apply(m, f, q.g, q.dg)
        with m.If(self.run):
            m.d.sync += acc.eq(total)
            with m.If(q.last):
                with m.Switch(q.node):
                    for n in settling:
                        with m.Case(n):
                            with m.If(q.net):
                                m.d.sync += nc[n].eq(v_new)
                            with m.Else():
                                m.d.sync += nf[n].eq(v_new)
            with m.If(q.gate):
                with m.Switch(q.edge):
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
        m.d.comb += tick_flags.eq(q.flags | Mux(q.last, node_flags, 0)
                                  | Mux(end & _or(clamp_flags), 8, 0))
        self._finish(m, st, commit, tick_flags, vf_next, vc_next, out_values)
        return m
