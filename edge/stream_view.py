"""``vigil stream SOURCE``: watch any transport and report checked frames per device.

Every received frame goes through :class:`~vigil.firmware_bridge.streams.StreamChecker`; link changes,
lost signal and stream resets are printed as they happen, and a table of per-device statistics
(frames, bytes, rejected frames, gaps, frames lost, duplicates, late frames, resets, clock drift) is
printed every ``report_s`` seconds and at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import TextIO

from vigil.firmware_bridge.streams import Delivered, SignalLost, StreamChecker, StreamReset
from vigil.firmware_bridge.transport import LinkEvent, Received, Transport

_COLUMNS = ("device", "frames", "bytes", "errors", "gaps", "lost", "dup", "late", "resets", "drift ppm")


def stats_table(checker: StreamChecker) -> str:
    """Per-device statistics as a fixed-width text table."""
    rows = [_COLUMNS]
    for dev in checker.devices():
        s = checker.stats(dev)
        drift = f"{s.drift_ppm:.1f}" if checker.clock(dev).ready else "-"
        rows.append(
            (
                str(dev),
                str(s.frames),
                str(s.bytes),
                str(s.n_errors),
                str(s.gaps),
                str(s.frames_lost),
                str(s.duplicates),
                str(s.late),
                str(s.resets),
                drift,
            )
        )
    if checker.unattributed_errors:
        rows.append(("?", "0", "0", str(sum(checker.unattributed_errors.values())), *("0",) * 5, "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def describe_block(ev: Delivered, t0: float = 0.0) -> str:
    """One line for a delivered sample block: who, which, when (monitor clock, seconds after ``t0``)
    and what."""
    f = ev.frame
    kinds = ",".join(k.name for k in dict.fromkeys(f.kinds))
    first = ", ".join(f"{v:.4g}" for v in f.physical()[0, :4])
    return (
        f"device {f.device_id} stream {f.stream_id} seq {f.sequence} t={ev.monitor_time - t0:+.3f}s "
        f"{f.n_samples}x{f.n_channels} {kinds} @ {f.sample_rate:g} Hz first=[{first}]"
    )


def describe(event: LinkEvent | SignalLost | StreamReset) -> str:
    """One line for a link change, a loss of signal or a stream reset."""
    if isinstance(event, LinkEvent):
        return f"link {event.source}: {event.state.value}" + (f" - {event.detail}" if event.detail else "")
    head = f"device {event.device} stream {event.stream}"
    if isinstance(event, SignalLost):
        return f"{head}: signal lost for {event.duration_us / 1e6:.3f} s ({event.n_frames} frames)"
    return f"{head}: stream reset (sequence {event.old_sequence} -> {event.sequence})"


def _charge_rejections(transport: Transport, checker: StreamChecker, charged: Counter) -> None:
    """Attribute the transport's new rejections to the device last seen on each source."""
    for (source, reason), n in transport.stats.rejected_by_source.items():
        new = n - charged[(source, reason)]
        if new:
            checker.record_errors(source, reason, new)
            charged[(source, reason)] = n


async def watch(
    transport: Transport,
    seconds: float | None = None,
    report_s: float = 5.0,
    out: TextIO = sys.stdout,
    quiet: bool = False,
    blocks: bool = False,
) -> StreamChecker:
    """Consume ``transport`` for ``seconds`` (None: until it ends) and report as it goes; with
    ``blocks`` also print every checked sample block."""
    checker = StreamChecker()
    charged: Counter = Counter()
    t0 = time.monotonic()
    next_report = t0 + report_s

    async def consume() -> None:
        nonlocal next_report
        async for item in transport:
            lines = [describe(item)] if isinstance(item, LinkEvent) else []
            if isinstance(item, Received):
                lines = [
                    describe_block(ev, t0) if isinstance(ev, Delivered) else describe(ev)
                    for ev in checker.check(item)
                    if isinstance(ev, SignalLost | StreamReset) or (blocks and isinstance(ev, Delivered))
                ]
            if not quiet and lines:
                out.write("".join(line + "\n" for line in lines))
            now = time.monotonic()
            if now >= next_report:
                _charge_rejections(transport, checker, charged)
                out.write(f"\n[{now - t0:.0f} s]\n{stats_table(checker)}\n\n")
                out.flush()
                next_report = now + report_s

    try:
        await asyncio.wait_for(consume(), timeout=seconds)
    except TimeoutError:
        pass
    finally:
        await transport.close()
    _charge_rejections(transport, checker, charged)
    out.write(f"\nafter {time.monotonic() - t0:.1f} s\n{stats_table(checker)}\n")
    if transport.stats.rejected:
        reasons = ", ".join(f"{r}: {n}" for r, n in transport.stats.rejected.most_common())
        out.write(f"rejected by the transport: {reasons}\n")
    return checker
