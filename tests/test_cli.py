"""The ``vigil`` command line, run as a user runs it."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np

from vigil.edge.cli import main
from vigil.edge.record_view import replay_records
from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels import qrs


def _vigil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vigil.edge.cli", *args], capture_output=True, text=True)


def test_help_lists_subcommands():
    r = _vigil("--help")
    assert r.returncode == 0
    assert "beats" in r.stdout and "demo" in r.stdout


def test_beats_prints_the_detector_output_for_any_chunk(data_dir):
    record = str(data_dir / "mitdb" / "100")
    x = read_wfdb(record, channels=[0]).signal[:, 0]
    expected = qrs.detect(x, 360.0)
    for chunk in ("7", "360"):
        r = _vigil("beats", record, "--chunk", chunk)
        assert r.returncode == 0, r.stderr
        np.testing.assert_array_equal(np.array(r.stdout.split(), dtype=np.int64), expected)


def test_beats_channel_option(data_dir, capsys):
    record = data_dir / "mitdb" / "100"
    assert main(["beats", str(record), "--channel", "1", "--chunk", "3600"]) == 0
    beats = np.array(capsys.readouterr().out.split(), dtype=np.int64)
    x = read_wfdb(record, channels=[1]).signal[:, 0]
    np.testing.assert_array_equal(beats, qrs.detect(x, 360.0))
    assert 2250 <= len(beats) <= 2290  # 2273 reference beats in 100


def test_bad_arguments_give_clear_errors(data_dir, capsys):
    assert main(["beats", "no/such/record"]) == 2
    assert "no WFDB header" in capsys.readouterr().err
    assert main(["beats", str(data_dir / "mitdb" / "100"), "--channel", "7"]) == 2
    assert "channels 0..1" in capsys.readouterr().err
    assert _vigil("beats", str(data_dir / "mitdb" / "100"), "--chunk", "0").returncode == 2


def test_replay_streams_and_scores(data_dir):
    out = io.StringIO()
    assert replay_records(speed=0, seconds=30, out=out) == 0
    text = out.getvalue()
    assert "100 lead MLII" in text and "208 lead MLII" in text
    assert text.count("sensitivity 100.00 %") == 2
