"""StreamChecker: gaps, duplicates, late frames, resets, u32 wraparound, clock drift."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.firmware_bridge.protocol import encode, make_frame
from vigil.firmware_bridge.streams import (
    ClockEstimator,
    Delivered,
    Duplicate,
    Late,
    SignalLost,
    StreamChecker,
    StreamReset,
    envelope_fit,
    lower_hull,
    seq_delta,
)
from vigil.firmware_bridge.transport import Received

FS = 250.0
N = 25  # samples per frame -> 100 ms frames
PERIOD_US = 100_000
RAW = np.zeros((N, 1), dtype=np.int16)


def rx(
    seq: int,
    ts_us: int | None = None,
    *,
    dev: int = 7,
    stream: int = 0,
    arrival: float | None = None,
    base_seq: int = 0,
) -> Received:
    ts = (seq - base_seq) % (1 << 32) * PERIOD_US if ts_us is None else ts_us
    f = make_frame(dev, seq % (1 << 32), ts, FS, RAW, stream_id=stream)
    return Received(f, "test", 100.0 + ts * 1e-6 + 0.001 if arrival is None else arrival)


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def test_seq_delta_wraps():
    assert seq_delta(0, (1 << 32) - 1) == 1
    assert seq_delta((1 << 32) - 1, 0) == -1
    assert seq_delta(5, 3) == 2


def test_in_order_delivered():
    c = StreamChecker()
    ev = c.check_many([rx(i) for i in range(10)])
    assert kinds(ev) == ["Delivered"] * 10
    s = c.stats(7)
    assert (s.frames, s.gaps, s.frames_lost, s.duplicates, s.late, s.resets) == (10, 0, 0, 0, 0, 0)
    assert s.bytes == 10 * len(encode(rx(0).frame))


def test_gap_is_explicit_signal_lost():
    c = StreamChecker()
    ev = c.check_many([rx(0), rx(1), rx(5), rx(6)])
    assert kinds(ev) == ["Delivered", "Delivered", "SignalLost", "Delivered", "Delivered"]
    lost = ev[2]
    assert isinstance(lost, SignalLost)
    assert (lost.device, lost.stream, lost.n_frames) == (7, 0, 3)
    assert lost.t1_us == pytest.approx(2 * PERIOD_US)  # end of frame 1
    assert lost.t2_us == 5 * PERIOD_US  # start of frame 5
    s = c.stats(7)
    assert (s.gaps, s.frames_lost) == (1, 3)


def test_duplicates_dropped_and_counted():
    c = StreamChecker()
    ev = c.check_many([rx(0), rx(1), rx(1), rx(2), rx(0), rx(2)])
    assert kinds(ev) == ["Delivered", "Delivered", "Duplicate", "Delivered", "Duplicate", "Duplicate"]
    assert c.stats(7).duplicates == 3


def test_late_frame_dropped_after_signal_lost():
    c = StreamChecker()
    ev = c.check_many([rx(0), rx(1), rx(3), rx(2), rx(4)])
    assert kinds(ev) == ["Delivered", "Delivered", "SignalLost", "Delivered", "Late", "Delivered"]
    assert isinstance(ev[4], Late) and ev[4].sequence == 2 and ev[4].behind == 1
    s = c.stats(7)
    assert (s.late, s.frames_lost, s.duplicates) == (1, 1, 0)
    delivered = [e.frame.sequence for e in ev if isinstance(e, Delivered)]
    assert delivered == [0, 1, 3, 4]


def test_reset_on_reboot_not_duplicates():
    c = StreamChecker()
    c.check_many([rx(i) for i in range(1000, 1100)])
    # reboot: sequence back to 0, device clock restarts near 0
    after = [rx(i, i * PERIOD_US, arrival=200.0 + i * 0.1) for i in range(50)]
    ev = c.check_many(after)
    assert kinds(ev)[:2] == ["StreamReset", "Delivered"]
    assert kinds(ev)[2:] == ["Delivered"] * 49
    reset = ev[0]
    assert isinstance(reset, StreamReset) and (reset.old_sequence, reset.sequence) == (1099, 0)
    s = c.stats(7)
    assert (s.resets, s.duplicates, s.late, s.gaps) == (1, 0, 0, 0)
    # the clock restarted with the device: monitor time follows the new epoch
    assert c.to_monitor_time(7, 10 * PERIOD_US) == pytest.approx(201.0, abs=0.01)


def test_reset_with_clock_continuing():
    c = StreamChecker()
    c.check_many([rx(i) for i in range(500, 600)])
    ev = c.check(rx(0, 700 * PERIOD_US))  # seq restarts, RTC-backed clock keeps running
    assert kinds(ev) == ["StreamReset", "Delivered"]


def test_u32_wraparound():
    c = StreamChecker()
    top = (1 << 32) - 3
    seqs = [top, top + 1, top + 2, top + 3, top + 4, top + 6]  # ... 2**32-1, 0, 1, (2 lost), 3
    ev = c.check_many([rx(s, base_seq=top) for s in seqs])
    assert kinds(ev) == ["Delivered"] * 5 + ["SignalLost", "Delivered"]
    assert ev[5].n_frames == 1
    assert [e.frame.sequence for e in ev if isinstance(e, Delivered)][-3:] == [0, 1, 3]
    s = c.stats(7)
    assert (s.resets, s.duplicates, s.late) == (0, 0, 0)


def test_streams_and_devices_independent():
    c = StreamChecker()
    ev = c.check_many([rx(0, stream=0), rx(0, stream=1), rx(0, dev=8), rx(1, stream=1), rx(1, stream=0)])
    assert kinds(ev) == ["Delivered"] * 5
    assert c.streams() == [(7, 0), (7, 1), (8, 0)]
    assert c.devices() == [7, 8]


def test_errors_attributed_by_source():
    c = StreamChecker()
    c.record_errors("tcp:a", "crc")
    c.check(rx(0))
    c.record_errors("test", "crc", 2)
    assert c.unattributed_errors == {"crc": 1}
    assert c.stats(7).errors == {"crc": 2} and c.stats(7).n_errors == 2


def test_envelope_fit_exact_line_below_points():
    x = np.linspace(0, 10, 50)
    y = 0.5 + 2e-4 * x + np.abs(np.sin(7 * x)) * 0.01
    y[::7] = 0.5 + 2e-4 * x[::7]
    c, s = envelope_fit(x, y)
    assert s == pytest.approx(2e-4, rel=1e-6) and c == pytest.approx(0.5)
    assert np.all(y - (c + s * x) >= -1e-12)


def ref_envelope_fit(x, y):
    """envelope_fit in numpy: sort, lower hull, the hull edge spanning mean(x)."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.min()), 0.0
    h = lower_hull(x, y)
    k = int(np.searchsorted(x[h], float(x.mean()), side="right"))
    k = min(max(k, 1), len(h) - 1)
    i, j = h[k - 1], h[k]
    slope = float((y[j] - y[i]) / (x[j] - x[i]))
    return float(y[i] - slope * x[i]), slope


@pytest.mark.parametrize("seed", range(5))
def test_envelope_fit_kernel_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 7, 50, 240):
        x = rng.uniform(0, 100, n) if seed % 2 else np.round(rng.uniform(0, 10, n))  # ties too
        y = rng.exponential(0.01, n) + 1e-4 * x
        assert envelope_fit(x, y) == ref_envelope_fit(x, y)
    assert envelope_fit(np.full(4, 2.0), np.array([3.0, 1.0, 2.0, 5.0])) == (1.0, 0.0)


class RefClock:
    """ClockEstimator's bucket bookkeeping on a deque of tuples (the reference for its arrays)."""

    def __init__(self, bucket_s, window):
        self.bucket_s, self.buckets, self.origin = bucket_s, deque(maxlen=window), None

    def add(self, device_us, arrival):
        if self.origin is None:
            self.origin = device_us
        x = (device_us - self.origin) * 1e-6
        y = arrival - x
        b = int(np.floor(x / self.bucket_s))
        if self.buckets and self.buckets[-1][0] == b:
            if y < self.buckets[-1][2]:
                self.buckets[-1] = (b, x, y)
        elif not self.buckets or b > self.buckets[-1][0]:
            self.buckets.append((b, x, y))
        else:
            for k, (bb, _, yy) in enumerate(self.buckets):
                if bb == b:
                    if y < yy:
                        self.buckets[k] = (b, x, y)
                    break

    def fit(self):
        a = np.asarray(self.buckets, dtype=np.float64)
        return ref_envelope_fit(a[:, 1], a[:, 2])


def test_clock_buckets_match_reference_with_reordering_and_window():
    rng = np.random.default_rng(4)
    n = 3000
    device_us = 1_000_000 + (np.arange(n) * 100_000 * (1 + 80e-6)).astype(np.int64)
    order = np.arange(n)
    for i in range(0, n - 20, 20):  # local reordering: late frames merge into older buckets
        order[i : i + 20] = order[i : i + 20][rng.permutation(20)]
    arrival = 50.0 + order * 0.1 + rng.exponential(0.005, n)
    clock, ref = ClockEstimator(bucket_s=0.5, window=40), RefClock(0.5, 40)
    for k in order:
        clock.add(int(device_us[k]), float(arrival[k]))
        ref.add(int(device_us[k]), float(arrival[k]))
        if k % 97 == 0:  # refit at the points the reference does (bucket boundaries aside)
            clock._fit = None
            assert clock.fit() == ref.fit()
    clock._fit = None
    assert clock.fit() == ref.fit()
    c, s = ref.fit()
    want = (float(device_us[5]) - float(device_us[order[0]])) * 1e-6 * (1.0 + s) + c
    assert clock.to_monitor_time(int(device_us[5])) == want
    assert clock.to_monitor_time(device_us[5]) == want  # numpy scalar: the array path


@pytest.mark.parametrize("ppm", [100.0, -60.0])
def test_drift_estimate_one_sided_delays(ppm):
    rng = np.random.default_rng(1)
    n = 3000  # 10 frames/s for 300 s
    true_t = 5000.0 + np.arange(n) * 0.1
    device_us = np.round((true_t - 5000.0) * (1 + ppm * 1e-6) * 1e6 + 123_456_789).astype(np.int64)
    delay = 0.002 + rng.exponential(0.004, n) + (rng.random(n) < 0.05) * rng.exponential(0.2, n)
    clock = ClockEstimator(bucket_s=1.0, window=400)
    for d, t in zip(device_us, true_t + delay, strict=True):
        clock.add(int(d), float(t))
    assert clock.drift_ppm == pytest.approx(ppm, abs=5.0)
    # maps device time to the true send time plus the minimum delay, within a millisecond
    err = np.asarray(clock.to_monitor_time(device_us)) - (true_t + 0.002)
    assert np.max(np.abs(err)) < 1e-3


def test_checker_reports_drift_and_sample_times():
    c = StreamChecker(clock_bucket_s=1.0)
    rng = np.random.default_rng(2)
    for i in range(2000):
        true = 10.0 + i * 0.1
        c.check(
            rx(i, int(round(i * PERIOD_US * (1 + 100e-6))), arrival=true + 0.001 + rng.exponential(0.003))
        )
    s = c.stats(7)
    assert s.drift_ppm == pytest.approx(100.0, abs=5.0)
    assert s.last_seen > 200.0
    f = make_frame(7, 2000, int(2000 * PERIOD_US * (1 + 100e-6)), FS, RAW)
    t = c.sample_times(f)
    assert t.shape == (N,) and np.all(np.diff(t) > 0)
    assert t[0] == pytest.approx(10.0 + 200.0 + 0.001, abs=2e-3)


# -- property: every frame accounted for


@st.composite
def mangled(draw):
    """Sequences 0..n-1 (from a random start, possibly wrapping), dropped, duplicated and locally
    reordered, on one consistent timeline."""
    n = draw(st.integers(1, 120))
    start = draw(st.sampled_from([0, 12345, (1 << 32) - 40]))
    seqs = [i for i in range(n) if not draw(st.booleans()) or i == 0]
    out = []
    for s in seqs:
        out.append(s)
        if draw(st.integers(0, 9)) == 0:
            out.append(s)
    # local swaps
    for _ in range(draw(st.integers(0, len(out)))):
        i = draw(st.integers(0, len(out) - 1))
        j = min(len(out) - 1, i + draw(st.integers(1, 5)))
        out[i], out[j] = out[j], out[i]
    return start, out


@settings(max_examples=150, deadline=None)
@given(mangled())
def test_every_frame_accounted(case):
    start, order = case
    c = StreamChecker(window=64)
    ev = c.check_many([rx(start + i, i * PERIOD_US) for i in order])
    n_del = sum(isinstance(e, Delivered) for e in ev)
    n_dup = sum(isinstance(e, Duplicate) for e in ev)
    n_late = sum(isinstance(e, Late) for e in ev)
    lost = sum(e.n_frames for e in ev if isinstance(e, SignalLost))
    assert not any(isinstance(e, StreamReset) for e in ev)
    assert n_del + n_dup + n_late == len(order)
    delivered = [e.frame.sequence for e in ev if isinstance(e, Delivered)]
    rel = [(s - start) % (1 << 32) for s in delivered]
    assert rel == sorted(set(rel))  # strictly increasing: in order, no duplicates
    assert lost == rel[-1] - rel[0] + 1 - len(rel)  # every skipped number announced exactly once
    # each distinct sequence number is delivered at most once; every duplicate copy is a Duplicate/Late
    assert n_dup + n_late == len(order) - n_del
    s = c.stats(7)
    assert (s.frames, s.duplicates, s.late, s.frames_lost) == (len(order), n_dup, n_late, lost)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, (1 << 32) - 1), st.integers(0, 1 << 40), st.integers(0, 2), st.floats(0, 1e4)
        ),
        max_size=60,
    )
)
def test_arbitrary_input_never_crashes(items):
    c = StreamChecker(window=8)
    total = 0
    for seq, ts, stream, arr in items:
        ev = c.check(rx(seq, ts, stream=stream, arrival=arr))
        assert sum(isinstance(e, (Delivered, Duplicate, Late)) for e in ev) == 1
        total += 1
        for d in c.devices():
            s = c.stats(d)
            assert np.isfinite(s.drift_ppm) or not c.clock(d).ready
    if items:
        s = c.stats(7)
        assert s.frames == total


def ref_duplicate_or_late(order, window):
    """Duplicate/Late of each non-delivered frame, judged on a set of the last ``window`` delivered
    sequence numbers (what the checker's bitmap must agree with); sequences relative, no wrap."""
    recent: deque[int] = deque(maxlen=window)
    last, out = None, []
    for s in order:
        if last is None or s > last:
            recent.append(s)
            last = s
        else:
            out.append("dup" if s in recent and last - s < window else "late")
    return out


@settings(max_examples=150, deadline=None)
@given(mangled(), st.sampled_from([1, 3, 8, 64]))
def test_duplicates_told_from_late_as_by_a_set(case, window):
    start, order = case
    ev = StreamChecker(window=window).check_many([rx(start + i, i * PERIOD_US) for i in order])
    got = ["dup" if isinstance(e, Duplicate) else "late" for e in ev if isinstance(e, (Duplicate, Late))]
    assert got == ref_duplicate_or_late(order, window)
