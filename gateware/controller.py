"""On-chip training controller (:class:`Controller`).

It holds the dataset in block RAM and runs the presentation schedule of
``docs/semantics.md`` on a :class:`~clln.gateware.fabric.Fabric` (settle ticks with
learning off, then learning ticks), in cyclic or LFSR order, for N epochs or until
stopped; it sums the squared output errors per epoch and records the free outputs of
every example. Its golden model is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln import protocol as p

from .memory import sync_read_port

__all__ = ["Controller", "lfsr_widths", "MODE_IDLE",
           "MODE_TRAIN", "MODE_EVAL"]

MODE_IDLE, MODE_TRAIN, MODE_EVAL = 0, 1, 2


def _pow2(n):
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(0, (n - 1).bit_length())


def lfsr_widths(max_examples):
    """LFSR widths the hardware supports: ``2 .. max(2, bit_length(max_examples))``."""
    return list(range(2, max(2, max_examples.bit_length()) + 1))


def _lfsr_next(state, width):
    """Amaranth expression: one step of the width-bit Fibonacci LFSR (``protocol.lfsr_step``)."""
    fb = state[p.LFSR_TAPS[width][0] - 1]
    for t in p.LFSR_TAPS[width][1:]:
        fb = fb ^ state[t - 1]
    return Cat(fb, state[:width - 1])


class Controller(wiring.Component):
    """Runs the schedule on the fabric, from a dataset in block RAM.

    Parameters
    ----------
    cfg : clln.config.Config
    fmt : clln.formats.Formats
    max_examples : int
        Rows of the dataset memory (and of the outputs memory).

    Attributes
    ----------
    error_bits : int
        Width of the error sums. An epoch's sum has at most ``max_examples * n_outputs``
        squares of an error below ``3 * 2**(v_bits - 1)``, so the sum saturates at
        ``2**64 - 1`` only when that bound does not fit 64 bits.

    Notes
    -----
    Ports: dataset writes (``ds_*``, one value per cycle: ``index`` < n_inputs is a
    drive value, then the targets; only while idle), schedule writes (``sched_*`` latched
    by ``sched_we``, which also reloads the LFSR from the seed: ``sched_seed`` is read
    bit by bit until ``busy`` falls; ``sched_n`` must be ``1 .. max_examples`` and
    ``sched_settle + sched_learn >= 1``, as the command handler checks), ``start`` (with
    ``start_epochs``, 0 = until stopped, and ``start_learn``), ``stop`` (honoured at the
    next tick boundary), ``clear`` (idle only: pulses ``fabric_reset``, with which the
    system resets the fabric, clears the tick counter, epoch, example, error sums and
    outputs memory and reloads the LFSR), the outputs memory read port (``out_*``, one
    cycle of latency) and status. ``f_*`` connect to the fabric (``f_sample_data`` is
    valid only with ``f_sample_we``). The dataset memory starts with the config's dataset
    and the schedule registers with the config's schedule.
    """

    def __init__(self, cfg, fmt, max_examples):
        self.cfg, self.fmt = cfg, fmt
        self.max_examples = max_examples
        self.n_inputs = len(cfg.io.inputs)
        self.n_outputs = len(cfg.io.outputs)
        self.n_driven = len(cfg.driven_nodes())
        self.streams = cfg.fabric.streams
        self.row = self.n_inputs + self.n_outputs
        self.row_stride = _pow2(self.row)
        self.out_stride = _pow2(self.streams * self.n_outputs)
        n_ex = min(len(cfg.task.x), max_examples)
        if n_ex < 1:
            raise ValueError("the dataset has no example")
        self.default_n = n_ex
        # |output - target| of a signed(v_bits + 1) output and a signed(v_bits) target
        self.diff_max = (3 << (fmt.v_bits - 1)) - 1
        self.error_bound = max_examples * self.n_outputs * self.diff_max ** 2
        self.error_bits = min(64, self.error_bound.bit_length())
        v = signed(fmt.v_bits)
        ex_shape = range(max(max_examples, 2))
        super().__init__({
            "ds_we": In(1), "ds_example": In(ex_shape), "ds_index": In(range(max(self.row, 2))),
            "ds_data": In(v),
            "sched_we": In(1), "sched_settle": In(32), "sched_learn": In(32),
            "sched_epochs": In(32), "sched_n": In(16), "sched_order": In(1),
            "sched_seed": In(32),
            "start": In(1), "start_epochs": In(32), "start_learn": In(1), "stop": In(1),
            "clear": In(1), "fabric_reset": Out(1),
            "out_example": In(ex_shape),
            "out_index": In(range(max(self.streams * self.n_outputs, 2))),
            "out_data": Out(signed(fmt.v_bits + 1)),
            "busy": Out(1), "mode": Out(2), "epoch": Out(32), "example": Out(ex_shape),
            "ticks": Out(64), "error_sum": Out(data.ArrayLayout(self.error_bits, self.streams)),
            "settle": Out(32),
            "learn_ticks": Out(32), "epochs": Out(32),
            "f_run": Out(1), "f_learn": Out(1), "f_sample_we": Out(1),
            "f_sample_addr": Out(range(max(self.n_driven + self.n_outputs, 2))),
            "f_sample_data": Out(v), "f_tick_done": In(1), "f_busy": In(1),
            "f_outputs": In(data.ArrayLayout(signed(fmt.v_bits + 1),
                                             self.streams * self.n_outputs)),
        })

    def _dataset_init(self):
        cfg, fmt = self.cfg, self.fmt
        x = fmt.volts_to_v(cfg.task.x)
        y = fmt.volts_to_v(cfg.task.y)
        init = [0] * (self.max_examples * self.row_stride)
        for i in range(min(len(x), self.max_examples)):
            for j, value in enumerate(list(x[i]) + list(y[i])):
                init[i * self.row_stride + j] = int(value)
        return init

    def elaborate(self, platform):
        m = Module()
        cfg, fmt = self.cfg, self.fmt
        K, n_in, W, C = self.n_outputs, self.n_inputs, self.row, self.streams
        v = signed(fmt.v_bits)
        ex_shape = range(max(self.max_examples, 2))

        m.submodules.dataset = ds = Memory(shape=v, depth=self.max_examples * self.row_stride,
                                           init=self._dataset_init())
        m.submodules.outmem = om = Memory(shape=signed(fmt.v_bits + 1),
                                          depth=self.max_examples * self.out_stride, init=[])
        ds_w, ds_r = ds.write_port(), sync_read_port(m, ds, "ds")
        om_w, om_r = om.write_port(), om.read_port()
        rs, os_ = self.row_stride.bit_length() - 1, self.out_stride.bit_length() - 1
        m.d.comb += [ds_w.en.eq(self.ds_we), ds_w.data.eq(self.ds_data),
                     ds_w.addr.eq((self.ds_example << rs) | self.ds_index),
                     om_r.addr.eq((self.out_example << os_) | self.out_index),
                     self.out_data.eq(om_r.data)]

        # Schedule registers (reset: the config's schedule).
        sch = cfg.schedule
        settle = Signal(32, init=sch.settle_ticks)
        learn_t = Signal(32, init=sch.learn_ticks)
        epochs = Signal(32, init=cfg.learning.epochs)
        n_ex = Signal(range(self.max_examples + 1), init=self.default_n)
        order = Signal()
        widths = lfsr_widths(self.max_examples)
        wmax = widths[-1]
        w0 = max(2, self.default_n.bit_length())
        seed0 = cfg.learning.seed
        lfsr = Signal(wmax, init=seed0 % ((1 << w0) - 1) + 1)
        # seed reduction: rem = seed mod (2^w - 1) by restoring division, kept for RESET
        rem = Signal(wmax, init=seed0 % ((1 << w0) - 1))
        reseed = Signal()               # SEED divides sched_seed (else only waits)
        n_out = self.max_examples * self.out_stride
        steps = Signal(range(max(33, n_out)))      # WIPE: the address (down to 0); SEED
        m.d.comb += [self.settle.eq(settle), self.learn_ticks.eq(learn_t),
                     self.epochs.eq(epochs)]

        # The LFSR's width w = max(2, bit_length(n_ex)) and modulus 2**w - 1.
        lfsr_next = Signal(wmax)
        modulus = Signal(wmax)
        m.d.comb += [lfsr_next.eq(_lfsr_next(lfsr, wmax)), modulus.eq((1 << wmax) - 1)]
        for w in reversed(widths[:-1]):
            with m.If(n_ex < (1 << w)):
                m.d.comb += [lfsr_next.eq(_lfsr_next(lfsr[:w], w)), modulus.eq((1 << w) - 1)]

        # Run state.
        mode = Signal(2)
        training = mode == MODE_TRAIN
        epoch = Signal(32)
        run_epochs = Signal(32)
        ex = Signal(ex_shape)           # example being presented
        ex_count = Signal(ex_shape)     # examples done in this epoch
        j = Signal(range(W + 1))
        # An example's ticks come in two phases, settle_ticks then learn_ticks (learning on
        # when training; inference runs both with learning off, then observes).
        elapsed = Signal(32)            # ticks done in this phase
        # the phase's length minus 1, set with ``learn_phase``: ``phase_end`` is then an
        # equality, with no adder in front of it (-1 for a phase of 0 ticks: never ends,
        # as ``elapsed + 1 == 0`` never holds)
        phase_last = Signal(signed(33))
        learn_phase = Signal()
        observed = Signal()
        stop_req = Signal()
        ticks = Signal(64)
        # per stream: the epoch's error so far, the last epoch's
        err_acc = [Signal(self.error_bits, name=f"err_acc{i}") for i in range(C)]
        last_err = [Signal(self.error_bits, name=f"last_err{i}") for i in range(C)]
        # Output being observed (0 outside OBS_*): output k of stream si, flat index kf.
        k = Signal(range(max(K, 2)))
        si = Signal(range(max(C, 2)))
        kf = Signal(range(max(K * C, 2)))
        # squarer: mcand = |d| << i, mplier = |d| >> i
        mag_bits = self.diff_max.bit_length()
        mcand = Signal(2 * mag_bits - 1)
        mplier = Signal(mag_bits)
        out_q = Signal(signed(fmt.v_bits + 1))      # the output observed

        m.d.comb += [self.mode.eq(mode), self.epoch.eq(epoch), self.example.eq(ex),
                     self.ticks.eq(ticks)]
        m.d.comb += [self.error_sum[i].eq(last_err[i]) for i in range(C)]

        starting = Signal()
        epoch_done = Signal()
        phase_end = Signal()            # this tick ends the phase
        m.d.comb += phase_end.eq(elapsed == phase_last)

        def begin_phase(m, learning):
            """Start a phase (``elapsed`` 0) of settle ticks or, ``learning``, of learn
            ticks."""
            m.d.sync += [elapsed.eq(0), learn_phase.eq(learning),
                         phase_last.eq(Mux(learning, learn_t, settle) - 1)]

        with m.If(self.f_tick_done):
            m.d.sync += ticks.eq(ticks + 1)
        with m.If(self.stop):
            m.d.sync += stop_req.eq(1)

        # Dataset reads: the row of the example while loading it, else the target of the
        # output observed next (read one cycle ahead), so no target is kept in registers.
        in_obs_sq = Signal()
        prev = j - 1
        k_next = Mux(k == K - 1, 0, k + 1)
        m.d.comb += [ds_r.addr.eq((ex << rs) | (n_in + Mux(in_obs_sq, k_next, k))),
                     self.f_sample_data.eq(ds_r.data),
                     self.f_sample_addr.eq(Mux(prev < n_in, prev, prev - n_in + self.n_driven))]

        def begin_example(m):
            m.d.sync += j.eq(0)
            m.next = "SELECT"

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                m.d.sync += stop_req.eq(0)
                with m.If(self.sched_we):
                    m.d.sync += [settle.eq(self.sched_settle), learn_t.eq(self.sched_learn),
                                 epochs.eq(self.sched_epochs), n_ex.eq(self.sched_n),
                                 order.eq(self.sched_order), rem.eq(0), reseed.eq(1),
                                 steps.eq(32)]
                    m.next = "SEED"
                with m.Elif(self.clear):
                    m.d.comb += self.fabric_reset.eq(1)
                    m.d.sync += [reseed.eq(0), steps.eq(n_out - 1)]
                    m.next = "WIPE"
                with m.Elif(self.start):
                    m.d.comb += starting.eq(1)
                    m.d.sync += [mode.eq(Mux(self.start_learn, MODE_TRAIN, MODE_EVAL)),
                                 run_epochs.eq(self.start_epochs), ex_count.eq(0)]
                    begin_example(m)
            with m.State("WIPE"):
                m.d.comb += [om_w.en.eq(1), om_w.addr.eq(steps), om_w.data.eq(0)]
                m.d.sync += steps.eq(steps - 1)
                with m.If(steps == 0):
                    m.d.sync += steps.eq(32)
                    m.next = "SEED"
            with m.State("SEED"):
                # 32 steps, sched_seed's bit steps - 1 at step steps
                with m.If(steps == 0):
                    m.d.sync += lfsr.eq(rem + 1)
                    m.next = "IDLE"
                with m.Else():
                    shifted = Cat(Cat(Const(0, 1), self.sched_seed).bit_select(steps, 1), rem)
                    m.d.sync += steps.eq(steps - 1)
                    with m.If(reseed):
                        m.d.sync += rem.eq(Mux(shifted >= modulus, shifted - modulus, shifted))
            with m.State("SELECT"):
                with m.If(stop_req):
                    m.d.sync += mode.eq(MODE_IDLE)
                    m.next = "IDLE"
                with m.Elif(order == 0):
                    m.d.sync += ex.eq(ex_count)
                    m.next = "LOAD"
                with m.Else():
                    m.d.sync += lfsr.eq(lfsr_next)
                    with m.If(lfsr <= n_ex):
                        m.d.sync += ex.eq(lfsr - 1)
                        m.next = "LOAD"
            with m.State("LOAD"):
                # a pipelined fabric reads the drives until its last tick has left
                m.d.comb += ds_r.addr.eq((ex << rs) | j)
                with m.If(~self.f_busy):
                    with m.If(j != 0):
                        m.d.comb += self.f_sample_we.eq(1)
                    m.d.sync += j.eq(j + 1)
                    with m.If(j == W):
                        m.d.sync += observed.eq(0)
                        begin_phase(m, settle == 0)
                        m.next = "TICKS"
            with m.State("TICKS"):
                m.d.comb += [self.f_run.eq(1), self.f_learn.eq(learn_phase & training)]
                with m.If(self.f_tick_done):
                    m.d.sync += elapsed.eq(elapsed + 1)
                    with m.If(stop_req):
                        m.d.sync += mode.eq(MODE_IDLE)
                        m.next = "IDLE"
                    with m.Elif(phase_end):
                        with m.If(~learn_phase & ~training & (learn_t != 0)):
                            # inference: the learn ticks follow, learning off
                            begin_phase(m, 1)
                        with m.Elif(observed):
                            m.next = "END"
                        with m.Else():
                            m.next = "OBS_DIFF"
            with m.State("OBS_DIFF"):
                # the output is recorded and registered, its error taken in OBS_ABS: the
                # output multiplexer and the error's adders in one cycle were the longest
                # path of the 8-stream board system
                out_k = Signal(signed(fmt.v_bits + 1))
                m.d.comb += out_k.eq(self.f_outputs[kf] if K * C > 1 else self.f_outputs[0])
                m.d.comb += [om_w.addr.eq((ex << os_) | kf), om_w.data.eq(out_k)]
                with m.If(~self.f_busy):                # the outputs once the ticks are out
                    m.d.comb += om_w.en.eq(1)
                    m.d.sync += out_q.eq(out_k)
                    m.next = "OBS_ABS"
            with m.State("OBS_ABS"):
                d = Signal(signed(fmt.v_bits + 2))
                m.d.comb += d.eq(out_q - ds_r.data)
                mag = Mux(d < 0, -d, d)[:mag_bits]      # |d| <= diff_max
                m.d.sync += [mcand.eq(mag), mplier.eq(mag)]
                m.next = "OBS_SQ"
            with m.State("OBS_SQ"):
                # serial shift-add square, summed straight into the epoch's error
                m.d.comb += in_obs_sq.eq(1)
                with m.If(mplier == 0):
                    with m.If(kf == K * C - 1):
                        m.d.sync += [observed.eq(1), k.eq(0), si.eq(0), kf.eq(0)]
                        with m.If(learn_phase | ~training | (learn_t == 0)):
                            m.next = "END"
                        with m.Else():
                            begin_phase(m, 1)
                            m.next = "TICKS"
                    with m.Else():
                        m.d.sync += [k.eq(k_next), kf.eq(kf + 1)]
                        with m.If(k == K - 1):
                            m.d.sync += si.eq(si + 1)
                        m.next = "OBS_DIFF"
                with m.Else():
                    with m.If(mplier[0]):
                        total = Signal(self.error_bits + 1)
                        m.d.comb += total.eq(Array(err_acc)[si] + mcand)
                        if self.error_bound >> 64:
                            total = Mux(total[64], (1 << 64) - 1, total[:64])
                        m.d.sync += Array(err_acc)[si].eq(total)
                    m.d.sync += [mcand.eq(mcand << 1), mplier.eq(mplier >> 1)]
            with m.State("END"):
                last_ex = ex_count + 1 == n_ex
                with m.If(last_ex):
                    m.d.comb += epoch_done.eq(1)
                    m.d.sync += [last.eq(acc) for last, acc in zip(last_err, err_acc)]
                    m.d.sync += [ex_count.eq(0), epoch.eq(epoch + 1)]
                with m.Else():
                    m.d.sync += ex_count.eq(ex_count + 1)
                with m.If(stop_req | (last_ex & (run_epochs != 0) & (epoch + 1 == run_epochs))):
                    m.d.sync += mode.eq(MODE_IDLE)
                    m.next = "IDLE"
                with m.Else():
                    begin_example(m)

        # Clears come last and alone, so that they map onto the flip-flops' reset.
        with m.If(self.fabric_reset):
            m.d.sync += [ticks.eq(0), ex.eq(0)] + [last.eq(0) for last in last_err]
        with m.If(self.fabric_reset | starting):
            m.d.sync += epoch.eq(0)
        with m.If(self.fabric_reset | starting | epoch_done):
            m.d.sync += [acc.eq(0) for acc in err_acc]
        m.d.comb += self.busy.eq((mode != MODE_IDLE) | fsm.ongoing("SEED") |
                                 fsm.ongoing("WIPE") | self.f_busy)
        return m
