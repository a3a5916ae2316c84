"""The C reference encoder (firmware_bridge/c/vigil_frame.h) and the shared test vectors.

Three sides must agree byte for byte: the committed ``vectors/*.bin``, what ``protocol.encode`` writes
for the fields ``vectors/vectors.json`` describes, and what ``test_vectors.c`` writes with the C
header. The C program is compiled with the machine's C compiler (skipped only if there is none).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vigil.firmware_bridge import cobs, protocol
from vigil.firmware_bridge.crc import crc32c
from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat

C_DIR = Path(__file__).resolve().parent.parent / "firmware_bridge" / "c"
VEC_DIR = C_DIR / "vectors"
RECORDS: list[dict[str, Any]] = json.loads((VEC_DIR / "vectors.json").read_text())
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"]


def _compiler() -> str | None:
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


@pytest.fixture(scope="module", params=["table", "bitwise"])
def c_program(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_vectors.c compiled with the table CRC (default) or with VIGIL_CRC32C_BITWISE."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C encoder is not checked")
    exe = tmp_path_factory.mktemp("c") / f"test_vectors_{request.param}"
    extra = ["-DVIGIL_CRC32C_BITWISE"] if request.param == "bitwise" else []
    cmd = [cc, *CFLAGS, *extra, "-I", str(C_DIR), str(C_DIR / "test_vectors.c"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return exe


def _bin(rec: dict[str, Any]) -> bytes:
    return (VEC_DIR / rec["file"]).read_bytes()


def _f32(bits: str) -> np.float32:
    return np.array(int(bits, 16), dtype="<u4").view("<f4")[()]


def _raw(rec: dict[str, Any]) -> np.ndarray:
    """The samples a record describes, from its formula (independently of make_vectors.py)."""
    fmt = SampleFormat[rec["sample_format"].upper()]
    ns, nch, s = rec["n_samples"], rec["n_channels"], rec["samples"]
    k = range(ns * nch)
    if s["formula"] == "lcg":
        bits = 16 if fmt == SampleFormat.INT16 else 24
        vals = [(s["a"] * j + s["b"]) % 2**bits - 2 ** (bits - 1) for j in k]
    elif s["formula"] == "dyadic":
        vals = [((s["a"] * j + s["b"]) % s["p"] - s["p"] // 2) / 2 ** s["e"] for j in k]
    else:
        vals = s["values"]
    return np.array(vals, dtype=(np.int16, np.int32, np.float32)[fmt]).reshape(ns, nch)


def _ids(recs: list[dict[str, Any]]) -> list[str]:
    return [r["file"] for r in recs]


def test_vector_set_is_complete() -> None:
    assert sorted(_ids(RECORDS)) == sorted(p.name for p in VEC_DIR.glob("*.bin"))
    readme = (VEC_DIR / "README.md").read_text()
    assert all(f"`{r['file']}`" in readme for r in RECORDS)
    formats = {r["sample_format"] for r in RECORDS}
    assert formats == {"int16", "int24", "float32"}
    assert 0xFFFFFFFF in {r["sequence"] for r in RECORDS}


def test_vectors_are_what_make_vectors_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", C_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = mod.build()
    stale = [name for name, data in files.items() if (VEC_DIR / name).read_bytes() != data]
    assert not stale, "run: .venv/bin/python firmware_bridge/c/make_vectors.py"


@pytest.mark.parametrize("rec", RECORDS, ids=_ids(RECORDS))
def test_decode_gives_the_described_fields(rec: dict[str, Any]) -> None:
    data = _bin(rec)
    f = protocol.decode(data)
    assert len(data) == rec["size"]
    assert int.from_bytes(data[-4:], "little") == int(rec["crc32c"], 16) == crc32c(data[:-4])
    assert f.version == rec["version"] == 1
    assert (f.device_id, f.stream_id, f.sequence, f.timestamp_us) == (
        rec["device_id"],
        rec["stream_id"],
        rec["sequence"],
        rec["timestamp_us"],
    )
    assert np.float32(f.sample_rate) == _f32(rec["sample_rate_bits"]) == np.float32(rec["sample_rate"])
    assert f.sample_format == SampleFormat[rec["sample_format"].upper()]
    assert (f.n_channels, f.n_samples) == (rec["n_channels"], rec["n_samples"])
    assert f.kinds == tuple(ChannelKind[k] for k in rec["kinds"])
    assert [int(k) for k in f.kinds] == rec["kind_codes"]
    for key in ("scale", "offset"):
        got = getattr(f, key)
        assert got.dtype == np.float32
        assert [f"0x{b:08x}" for b in got.view("<u4").tolist()] == rec[f"{key}_bits"]
        assert got.tolist() == rec[key]
    want = _raw(rec)
    assert f.raw.dtype == want.dtype and f.raw.shape == want.shape
    # compare bits, so -0.0 and 0.0 differ
    assert f.raw.tobytes() == want.tobytes()
    if "raw" in rec:
        assert f.raw.tolist() == rec["raw"]


@pytest.mark.parametrize("rec", RECORDS, ids=_ids(RECORDS))
def test_python_encode_reproduces_the_vector(rec: dict[str, Any]) -> None:
    frame = protocol.make_frame(
        device_id=rec["device_id"],
        sequence=rec["sequence"],
        timestamp_us=rec["timestamp_us"],
        sample_rate=float(_f32(rec["sample_rate_bits"])),
        raw=_raw(rec),
        kinds=tuple(ChannelKind[k] for k in rec["kinds"]),
        sample_format=SampleFormat[rec["sample_format"].upper()],
        scale=np.array([_f32(b) for b in rec["scale_bits"]], dtype=np.float32),
        offset=np.array([_f32(b) for b in rec["offset_bits"]], dtype=np.float32),
        stream_id=rec["stream_id"],
    )
    assert protocol.encode(frame) == _bin(rec)
    assert protocol.encode(protocol.decode(_bin(rec))) == _bin(rec)


def test_c_program_self_checks_pass(c_program: Path) -> None:
    res = subprocess.run([str(c_program), str(VEC_DIR)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.rstrip().endswith("0 failure(s)")
    assert res.stdout.count("bytes identical") == len(RECORDS)


def test_c_bytes_equal_the_vectors(c_program: Path) -> None:
    res = subprocess.run([str(c_program), "--hex"], capture_output=True, text=True, timeout=60, check=True)
    got = dict(line.split(" ") for line in res.stdout.splitlines())
    assert sorted(got) == sorted(r["file"].removesuffix(".bin") for r in RECORDS)
    for rec in RECORDS:
        assert bytes.fromhex(got[rec["file"].removesuffix(".bin")]) == _bin(rec), rec["file"]


def _cobs_inputs() -> list[bytes]:
    rng = np.random.default_rng(7)
    fixed = [b"", b"\x00", b"\x00\x00", b"\x01", b"\x11\x22\x00\x33", b"\xff" * 253, b"\xff" * 254]
    fixed += [b"\x01" * 255, b"\x01" * 508, b"\x01" * 254 + b"\x00", b"\x00" + b"\x02" * 600 + b"\x00"]
    sparse = [rng.integers(0, 4, n, dtype=np.uint8).tobytes() for n in (1, 7, 300, 1000)]
    dense = [rng.integers(1, 256, n, dtype=np.uint8).tobytes() for n in (253, 254, 255, 1500)]
    return fixed + sparse + dense + [_bin(RECORDS[1])]


def test_c_cobs_matches_python(c_program: Path) -> None:
    inputs = _cobs_inputs()
    stdin = "".join(b.hex() + "\n" for b in inputs)
    res = subprocess.run(
        [str(c_program), "--cobs"], input=stdin, capture_output=True, text=True, timeout=60, check=True
    )
    lines = res.stdout.splitlines()
    assert len(lines) == len(inputs)
    for data, line in zip(inputs, lines, strict=True):
        enc = bytes.fromhex(line)
        assert enc == cobs.encode(data), data[:16]
        assert cobs.decode(enc[:-1]) == data
