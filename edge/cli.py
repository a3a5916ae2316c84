"""The ``vigil`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_beats(args: argparse.Namespace) -> int:
    import numpy as np

    from vigil.firmware_bridge.replay import chunks, read_wfdb
    from vigil.kernels.qrs import QRSDetector

    rec = read_wfdb(args.record, channels=[args.channel])
    det = QRSDetector(rec.fs)
    out = sys.stdout
    for block in chunks(rec.signal, args.chunk):
        beats = det.process(block)
        if len(beats):
            out.write("\n".join(map(str, beats.tolist())) + "\n")
    tail = det.finish()
    if len(tail):
        out.write("\n".join(map(str, np.asarray(tail).tolist())) + "\n")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vigil.edge.demo import run_demo

    seconds = None if args.seconds == 0 else args.seconds
    return run_demo(records=args.record, speed=args.speed, seconds=seconds)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Edge monitor for wearable biosignals.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("beats", help="stream a WFDB record through the QRS detector, print beat samples")
    p.add_argument("record", help="WFDB record path without extension, e.g. data/mitdb/100")
    p.add_argument("--channel", type=int, default=0, help="signal index (default 0)")
    p.add_argument("--chunk", type=_positive_int, default=360, help="samples per chunk (default 360)")
    p.set_defaults(func=_cmd_beats)

    p = sub.add_parser("demo", help="stream bundled real recordings and show beats, rate, quality")
    p.add_argument("--record", action="append", help="WFDB record (repeatable; default: bundled 100, 208)")
    p.add_argument("--speed", type=float, default=20.0, help="x real time; 0 = as fast as possible")
    p.add_argument("--seconds", type=float, default=120.0, help="signal seconds per record; 0 = all")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
