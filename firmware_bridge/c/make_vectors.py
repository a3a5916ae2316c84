#!/usr/bin/env python
"""Write the shared Vigil frame v1 test vectors with the Python encoder (``protocol.encode``).

Each vector is one encoded frame, ``vectors/<name>.bin``; ``vectors/vectors.json`` lists every field
each decodes to (and the samples, explicitly where short, always as a formula) and
``vectors/README.md`` is the same in prose. ``test_vectors.c`` encodes the same frames with
``vigil_frame.h`` and compares bytes; ``tests/test_c_encoder.py`` runs both sides.

Samples are given by formulas that C and Python compute exactly, with ``k = i * C + c`` the index of
sample ``i`` of channel ``c`` in sample-major order:

* ``lcg``: ``((a * k + b) mod 2**bits) - 2**(bits - 1)`` (bits 16 for int16, 24 for int24);
* ``dyadic``: ``(((a * k + b) mod p) - p // 2) / 2**e`` (exact in float32);
* ``list``: the values, sample-major.

Usage::

    .venv/bin/python firmware_bridge/c/make_vectors.py            # (re)write the vectors
    .venv/bin/python firmware_bridge/c/make_vectors.py --check    # exit 1 if the files differ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vigil.firmware_bridge import protocol
from vigil.firmware_bridge.protocol import ChannelKind as K
from vigil.firmware_bridge.protocol import SampleFormat

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "vectors"

# The vector definitions; test_vectors.c repeats them in C (keep the two in step).
VECTORS: list[dict[str, Any]] = [
    dict(
        name="ecg_int16_1ch",
        what="single-lead ECG, int16: a descending ramp that starts at both int16 extremes",
        device_id=0x00000101,
        stream_id=0,
        sequence=0,
        timestamp_us=0,
        sample_rate=250.0,
        sample_format=SampleFormat.INT16,
        kinds=[K.ECG],
        scale=[0.005],
        offset=[0.0],
        n_samples=25,
        samples=dict(formula="lcg", a=65535, b=0),
    ),
    dict(
        name="typical_int24_8ch",
        what="the typical frame: 32 samples x 8 channels of int24 (ADS1299-style biopotential front end)",
        device_id=0xA1B2C3D4,
        stream_id=1,
        sequence=123456,
        timestamp_us=1_700_000_000_123_456,
        sample_rate=500.0,
        sample_format=SampleFormat.INT24,
        kinds=[K.ECG, K.ECG, K.ECG, K.EEG, K.EEG, K.EEG, K.EMG, K.RESP],
        scale=[0.02235174] * 7 + [1.0],
        offset=[0.0] * 7 + [-100.0],
        n_samples=32,
        samples=dict(formula="lcg", a=0x9E3779, b=0x123456),
    ),
    dict(
        name="imu_float32_3ch",
        what="3-axis accelerometer, float32 samples in g, scaled to m/s^2",
        device_id=0x0000BEEF,
        stream_id=2,
        sequence=42,
        timestamp_us=5_000_000,
        sample_rate=104.0,
        sample_format=SampleFormat.FLOAT32,
        kinds=[K.IMU_ACC] * 3,
        scale=[9.80665] * 3,
        offset=[0.0] * 3,
        n_samples=13,
        samples=dict(formula="dyadic", a=37, b=0, p=257, e=6),
    ),
    dict(
        name="max_channels_int16_64ch",
        what="64 channels (the maximum, a full EEG cap), kinds cycling 0..8, header integers at max",
        device_id=0xFFFFFFFF,
        stream_id=255,
        sequence=7,
        timestamp_us=(1 << 64) - 1,
        sample_rate=1e6,
        sample_format=SampleFormat.INT16,
        kinds=[K(c % 9) for c in range(64)],
        scale=[(c + 1) / 8 for c in range(64)],
        offset=[-c / 2 for c in range(64)],
        n_samples=4,
        table_note=("scale[c] = (c + 1) / 8", "offset[c] = -c / 2"),
        samples=dict(formula="lcg", a=40503, b=12345),
    ),
    dict(
        name="sequence_wrap_int16_2ch",
        what="sequence number 0xFFFFFFFF (the next frame is 0), timestamp past 2**32 us",
        device_id=0x00000002,
        stream_id=3,
        sequence=0xFFFFFFFF,
        timestamp_us=4_294_967_296_000,
        sample_rate=25.0,
        sample_format=SampleFormat.INT16,
        kinds=[K.RESP, K.TEMP],
        scale=[1.0, 0.01],
        offset=[0.0, 0.0],
        n_samples=8,
        samples=dict(formula="lcg", a=3, b=32768),
    ),
    dict(
        name="int24_extremes_2ch",
        what="int24 sign extension: -8388608, 8388607 and other boundary values",
        device_id=0x00000003,
        stream_id=0,
        sequence=1,
        timestamp_us=1000,
        sample_rate=2000.0,
        sample_format=SampleFormat.INT24,
        kinds=[K.EMG, K.EMG],
        scale=[1.0, 1.0],
        offset=[0.0, 0.0],
        n_samples=6,
        samples=dict(
            formula="list",
            values=[
                -8388608,
                8388607,
                -1,
                0,
                1,
                -2,
                1193046,
                -1193046,
                255,
                -256,
                65535,
                -65536,
            ],
        ),
    ),
    dict(
        name="scale_offset_int16_4ch",
        what="non-trivial float32 scale, offset and rate: inexact decimals, negative, -0.0, near max",
        device_id=0x7F7F7F7F,
        stream_id=4,
        sequence=1000,
        timestamp_us=86_400_000_000,
        sample_rate=333.333333,
        sample_format=SampleFormat.INT16,
        kinds=[K.TEMP, K.PPG, K.OTHER, K.IMU_GYRO],
        scale=[0.1, -0.000123, 3.0517578125e-05, 1234.5677],
        offset=[-273.15, 0.001, -0.0, 3.0e38],
        n_samples=5,
        samples=dict(formula="lcg", a=7919, b=1000),
    ),
    dict(
        name="float32_specials_1ch",
        what="float32 samples: -0.0, smallest subnormal, largest finite, smallest normal, 0.1",
        device_id=0x00000005,
        stream_id=6,
        sequence=99,
        timestamp_us=77,
        sample_rate=0.5,
        sample_format=SampleFormat.FLOAT32,
        kinds=[K.OTHER],
        scale=[1.0],
        offset=[0.0],
        n_samples=8,
        samples=dict(
            formula="list",
            values=[
                -0.0,
                1.40129846e-45,
                3.40282347e38,
                -3.40282347e38,
                1.17549435e-38,
                0.1,
                -1.5,
                65504.0,
            ],
        ),
    ),
    dict(
        name="max_samples_int24_1ch",
        what="4096 samples (the maximum) of one int24 channel: a 12 KiB frame",
        device_id=0x00000004,
        stream_id=5,
        sequence=2,
        timestamp_us=123,
        sample_rate=8000.0,
        sample_format=SampleFormat.INT24,
        kinds=[K.PPG],
        scale=[1.0],
        offset=[0.0],
        n_samples=4096,
        samples=dict(formula="lcg", a=2654435, b=7),
    ),
]

EXPLICIT_LIMIT = 512  # vectors.json lists the samples of frames with at most this many


def raw_samples(spec: dict[str, Any]) -> np.ndarray:
    """The [samples, channels] raw values of a vector, in its format's dtype."""
    fmt = SampleFormat(spec["sample_format"])
    ns, nch = spec["n_samples"], len(spec["kinds"])
    s = spec["samples"]
    k = np.arange(ns * nch, dtype=object)
    if s["formula"] == "lcg":
        bits = 16 if fmt == SampleFormat.INT16 else 24
        vals = [(s["a"] * int(j) + s["b"]) % (1 << bits) - (1 << (bits - 1)) for j in k]
    elif s["formula"] == "dyadic":
        vals = [((s["a"] * int(j) + s["b"]) % s["p"] - s["p"] // 2) / 2 ** s["e"] for j in k]
    else:
        vals = list(s["values"])
    dtype = (np.int16, np.int32, np.float32)[fmt]
    return np.array(vals, dtype=dtype).reshape(ns, nch)


def frame_of(spec: dict[str, Any]) -> protocol.Frame:
    """The :class:`~vigil.firmware_bridge.protocol.Frame` a vector encodes."""
    return protocol.make_frame(
        device_id=spec["device_id"],
        sequence=spec["sequence"],
        timestamp_us=spec["timestamp_us"],
        sample_rate=spec["sample_rate"],
        raw=raw_samples(spec),
        kinds=tuple(spec["kinds"]),
        sample_format=spec["sample_format"],
        scale=np.array(spec["scale"], dtype=np.float32),
        offset=np.array(spec["offset"], dtype=np.float32),
        stream_id=spec["stream_id"],
    )


def _f32(x: float) -> float:
    """The exact value of ``x`` rounded to float32 (JSON-safe, round-trips to the same bits)."""
    return float(np.float32(x))


def _short(x: float) -> str:
    """The shortest decimal that rounds to the same float32."""
    return str(np.float32(x))


def _bits(x: float) -> str:
    return f"0x{int(np.array(x, dtype='<f4').view('<u4')):08x}"


def describe(spec: dict[str, Any], data: bytes) -> dict[str, Any]:
    """The JSON record of one vector: every field its bytes decode to."""
    f = protocol.decode(data)
    rec: dict[str, Any] = {
        "file": f"{spec['name']}.bin",
        "what": spec["what"],
        "size": len(data),
        "crc32c": f"0x{int.from_bytes(data[-4:], 'little'):08x}",
        "version": f.version,
        "device_id": f.device_id,
        "stream_id": f.stream_id,
        "sequence": f.sequence,
        "timestamp_us": f.timestamp_us,
        "sample_rate": _f32(f.sample_rate),
        "sample_rate_bits": _bits(f.sample_rate),
        "sample_format": f.sample_format.name.lower(),
        "n_channels": f.n_channels,
        "n_samples": f.n_samples,
        "kinds": [k.name for k in f.kinds],
        "kind_codes": [int(k) for k in f.kinds],
        "scale": [_f32(v) for v in f.scale.tolist()],
        "scale_bits": [_bits(v) for v in f.scale.tolist()],
        "offset": [_f32(v) for v in f.offset.tolist()],
        "offset_bits": [_bits(v) for v in f.offset.tolist()],
        "samples": dict(spec["samples"]),
    }
    if "table_note" in spec:
        rec["table_note"] = list(spec["table_note"])
    if f.raw.size <= EXPLICIT_LIMIT:
        rec["raw"] = f.raw.tolist()
    return rec


def _field_rows(rec: dict[str, Any]) -> list[str]:
    s = rec["samples"]
    if s["formula"] == "lcg":
        bits = 16 if rec["sample_format"] == "int16" else 24
        how = f"`(({s['a']} * k + {s['b']}) mod 2**{bits}) - 2**{bits - 1}`"
    elif s["formula"] == "dyadic":
        how = f"`((({s['a']} * k + {s['b']}) mod {s['p']}) - {s['p'] // 2}) / 2**{s['e']}`"
    else:
        how = "sample-major: " + ", ".join(repr(v) for v in s["values"])

    def floats(key: str) -> str:
        vals, bits = rec[key], rec[f"{key}_bits"]
        if len(set(bits)) == 1 and len(bits) > 1:
            return f"all {_short(vals[0])} ({bits[0]})"
        if len(vals) > 8:
            return f"`{rec['table_note'][key == 'offset']}` ({len(vals)} values; exact in float32)"
        return ", ".join(f"{_short(v)} ({b})" for v, b in zip(vals, bits, strict=True))

    kinds = rec["kinds"]
    kind_text = ", ".join(kinds) if len(set(kinds)) > 1 or len(kinds) == 1 else f"{len(kinds)} x {kinds[0]}"
    if len(kinds) > 8:
        kind_text = "channel c has kind c mod 9 (OTHER, ECG, ..., TEMP, OTHER, ...)"
    return [
        f"| size, CRC-32C | {rec['size']} bytes, {rec['crc32c']} |",
        f"| device_id | {rec['device_id']} (0x{rec['device_id']:08x}) |",
        f"| stream_id | {rec['stream_id']} |",
        f"| sequence | {rec['sequence']} (0x{rec['sequence']:08x}) |",
        f"| timestamp_us | {rec['timestamp_us']} |",
        f"| sample_rate | {_short(rec['sample_rate'])} Hz ({rec['sample_rate_bits']}) |",
        f"| sample_format | {rec['sample_format']} |",
        f"| channels x samples | {rec['n_channels']} x {rec['n_samples']} |",
        f"| kinds | {kind_text} |",
        f"| scale | {floats('scale')} |",
        f"| offset | {floats('offset')} |",
        f"| raw[i][c], k = i*C + c | {how} |",
    ]


README_HEAD = """# Vigil frame v1 test vectors

Generated by `make_vectors.py` with the Python encoder (`firmware_bridge/protocol.py`); do not edit
by hand. Each `<name>.bin` is one complete encoded frame (header, channel table, payload, CRC-32C),
no COBS. `vectors.json` has the same information machine-readably, including every raw sample for
frames of at most {limit} samples. `test_vectors.c` encodes the same frames with `../vigil_frame.h`
and compares them byte for byte:

    cc -std=c99 -Wall -Wextra -Werror -pedantic -I firmware_bridge/c \\
        firmware_bridge/c/test_vectors.c -o test_vectors
    ./test_vectors firmware_bridge/c/vectors

Conventions. `raw[i][c]` is sample `i` of channel `c` in wire units (int16, int24 held in int32,
or float32); `k = i * C + c` is its index in the sample-major payload; the receiver computes
`physical = raw * scale[c] + offset[c]`. Every frame has version 1 and flags 0. Float fields are
float32 on the wire: the tables give the shortest decimal that rounds to them and their bits. In
`mod`, the result is in `[0, modulus)`.

Channel limit: 1..64 channels (`max_channels_int16_64ch` is that limit); the header length
`32 + 9 * C` is a u16.
"""


def readme(records: list[dict[str, Any]]) -> str:
    """The README text for the vector records."""
    lines = [README_HEAD.format(limit=EXPLICIT_LIMIT)]
    for rec in records:
        lines += [f"## `{rec['file']}`", "", rec["what"][0].upper() + rec["what"][1:] + ".", ""]
        lines += ["| field | value |", "|---|---|", *_field_rows(rec), ""]
    return "\n".join(lines)


def build() -> dict[str, bytes]:
    """Every output file's name and contents."""
    files: dict[str, bytes] = {}
    records = []
    for spec in VECTORS:
        data = protocol.encode(frame_of(spec))
        files[f"{spec['name']}.bin"] = data
        records.append(describe(spec, data))
    files["vectors.json"] = (json.dumps(records, indent=1) + "\n").encode()
    files["README.md"] = readme(records).encode()
    return files


def _same(path: Path, data: bytes) -> bool:
    return path.is_file() and path.read_bytes() == data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk; write nothing")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    files = build()
    if args.check:
        stale = [n for n, b in files.items() if not _same(args.out / n, b)]
        for n in stale:
            print(f"stale: {args.out / n}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        (args.out / n).write_bytes(b)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
