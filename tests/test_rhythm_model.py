"""ecg-rhythm: the shipped artifacts reproduce their card on the vendored CinC 2017 strips (ONNX Runtime
only), INT8 keeps FP32's accuracy, ``vigil classify-rhythm`` works without torch, and ``vigil train
ecg-rhythm`` runs end to end (quick mode, tmp zoo)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.cli import main
from vigil.edge.rhythm_classes import DEFAULT_MODEL, classify_records, classify_strip, load_rhythm_model
from vigil.export.card import PRECISIONS, load_card
from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels.rhythm_strip import StripParams, strip_windows
from vigil.models.metrics import class_stats, macro_f1

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "cinc2017"
RECORDS = sorted(p.stem for p in DATA.glob("*.hea"))
LABELS = dict(line.split(",") for line in (DATA / "REFERENCE-v3.csv").read_text().split())
#: Tolerance on the card's per-record probabilities: FP32 is float arithmetic in another order on
#: another CPU; INT8 may also round a requantisation step differently (VNNI vs AVX2 kernels).
TOL = {"fp32": 1e-4, "int8": 2e-2, "int8-tensorrt": 2e-2}


@pytest.fixture(scope="module")
def card():
    return load_card(DEFAULT_MODEL)


def _tiny():
    """A recipe small enough for a test: one epoch, no pretraining, no distillation."""
    from vigil.models import rhythm

    return rhythm.Config(epochs=1, qat_epochs=0, crops_per_10s=0.5, pretrain_epochs=0, teachers=())


def _strip(name: str) -> tuple[np.ndarray, float]:
    rec = read_wfdb(DATA / name, channels=[0], annotator=None)
    return rec.signal[:, 0], rec.fs


def test_shipped_card_meets_the_size_floors(card):
    size = card.metrics["size"]
    assert size["parameters"] <= 100_000
    for p in ("int8", "int8-tensorrt"):
        assert (DEFAULT_MODEL.parent / card.artifacts[p].file).stat().st_size <= 100 * 1024, p
    assert card.classes == ("N", "A", "O", "~") and card.task == "ecg-rhythm"
    p = StripParams.from_card(card.preprocessing)
    assert card.inputs == {"ecg": (-1, 1, p.window), "rr": (-1, 13)} and card.fs == p.fs
    assert sorted(card.metrics["vendored"]["records"]) == RECORDS


@pytest.mark.parametrize("precision", PRECISIONS)
def test_shipped_artifacts_reproduce_the_card_on_vendored_records(card, precision: str):
    m = load_rhythm_model(precision=precision, providers="cpu")
    want = card.metrics["vendored"]
    hits = 0
    for name in RECORDS:
        call = classify_strip(m, *_strip(name))
        rec = want["records"][name]
        np.testing.assert_allclose(call.probabilities, rec[f"{precision}_prob"], atol=TOL[precision], rtol=0)
        assert call.label == rec[f"{precision}_label"], name
        assert call.n_windows == rec["windows"] and call.n_skipped == 0
        hits += call.label == LABELS[name]
    assert hits / len(RECORDS) == pytest.approx(want[f"{precision}_accuracy"], abs=1e-4)


@pytest.mark.parametrize("int8", ["int8", "int8-tensorrt"])
def test_int8_keeps_fp32_accuracy_on_vendored_windows(int8: str):
    """The issue's INT8 floor on real windows: CinC macro-F1 within 1 point of FP32 and no class losing
    more than 2 points of sensitivity (each window labelled with its record's class; at most one window
    for a class with under 50 windows here). Both INT8 artifacts, each run here on the CPU."""
    fp = load_rhythm_model(precision="fp32", providers="cpu")
    q = load_rhythm_model(precision=int8, providers="cpu")
    classes = list(fp.card.classes)
    ref, pf, pq = [], [], []
    for name in RECORDS:
        win = strip_windows(*_strip(name), StripParams.from_card(fp.card.preprocessing))
        ref += [classes.index(LABELS[name])] * len(win.ecg)
        pf += list(fp.run(win.inputs()).argmax(1))
        pq += list(q.run(win.inputs()).argmax(1))
    ref, pf, pq = np.array(ref), np.array(pf), np.array(pq)
    assert len(ref) >= 60
    assert macro_f1(ref, pf, 4, (0, 1, 2)) - macro_f1(ref, pq, 4, (0, 1, 2)) <= 0.01
    for a, b in zip(class_stats(ref, pf, classes), class_stats(ref, pq, classes), strict=True):
        # 2 points, or one window where a class has fewer than 50 here (one window is then > 2 points;
        # the card's floor, checked below, is on the cross-validated records)
        assert a.se - b.se <= max(0.02, 1.0 / a.n_ref + 1e-9), a.label
    assert np.mean(pf == pq) >= 0.95


def test_cards_int8_floor_on_the_cross_validation(card):
    floor = card.metrics["int8_floor"]
    assert floor["passes"], floor
    assert card.metrics["cv_int8"]["records"] == card.data["records"] == 1000


def test_classify_rhythm_cli_prints_record_and_label(card, capsys):
    names = ["A00001", "A00004", "A00008", "A00022"]
    assert main(["classify-rhythm", *(str(DATA / n) for n in names)]) == 0
    got = capsys.readouterr().out.split("\n")[:-1]
    want = card.metrics["vendored"]["records"]
    assert got == [f"{n} {want[n]['int8_label']}" for n in names]


def test_classify_rhythm_needs_no_torch():
    code = (
        "import sys\n"
        "from vigil.edge.cli import main\n"
        f"rc = main(['classify-rhythm', {str(DATA / 'A00001')!r}, '--precision', 'fp32'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "A00001",
        load_card(DEFAULT_MODEL).metrics["vendored"]["records"]["A00001"]["fp32_label"],
    ]


def test_nan_windows_are_counted_and_an_unreadable_strip_is_noisy():
    m = load_rhythm_model()
    x, fs = _strip("A00008")
    x[int(31 * fs) : int(32 * fs)] = np.nan
    call = classify_strip(m, x, fs)
    assert call.n_windows == 21 and call.n_skipped == 4 and np.isfinite(call.probabilities).all()
    dead = classify_strip(m, np.full(9000, np.nan), 300.0)
    assert dead.label == "~" and dead.n_skipped == dead.n_windows == 9
    assert np.isnan(dead.probabilities).all()


def test_a_missing_record_is_reported_and_the_rest_classified():
    out, err = io.StringIO(), io.StringIO()
    rc = classify_records([str(DATA / "nope"), str(DATA / "A00004")], out=out, err=err)
    assert rc == 1 and "nope" in err.getvalue()
    assert out.getvalue().split()[0] == "A00004"


# ---------------------------------------------------------------------------------------------
# Training (needs the train extra)


def test_quick_training_runs_end_to_end(tmp_path: Path):
    pytest.importorskip("torch", reason="training needs the train extra (torch)")
    from vigil.models import rhythm
    from vigil.models.registry import TrainOptions

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cinc2017_af").symlink_to(DATA)
    opts = TrainOptions(data=tmp_path / "data", zoo=tmp_path / "zoo", quick=True, progress=False)
    card = rhythm.train(opts)
    for suffix in (".pt", ".fp32.onnx", ".int8.onnx", ".int8-tensorrt.onnx", ".card.json"):
        assert (opts.zoo / f"ecg-rhythm{suffix}").is_file(), suffix
    assert card.version.endswith("-quick") and card.metrics["cv_fp32"]["records"] == len(RECORDS)
    assert set(card.metrics["calibration"]["cinc_f1_by_method"]) == {"minmax", "entropy", "percentile"}
    out = io.StringIO()
    assert classify_records([str(DATA / "A00001")], model=opts.zoo / "ecg-rhythm", out=out) == 0
    assert out.getvalue().split()[1] in card.classes
    again = rhythm.export(opts)  # export alone, from the saved weights, gives the same artifacts
    assert again.artifacts["fp32"].sha256 == card.artifacts["fp32"].sha256


def test_training_is_seeded():
    torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
    import dataclasses

    from vigil.models import rhythm

    cfg = dataclasses.replace(rhythm.Config(), epochs=1, crops_per_10s=0.5, pretrain_epochs=1, teachers=())
    recs = rhythm.load_records(DATA, cfg.strip)[:4]
    from vigil.models.rhythm_pretext import pretext_windows

    x, y = pretext_windows(REPO / "data" / "mitdb", ("208",), cfg.strip, hop_s=60.0)
    a = rhythm.fit_model(cfg, recs, 7, False, "a", (x, y)).state_dict()
    b = rhythm.fit_model(cfg, recs, 7, False, "b", (x, y)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="pretrain_epochs"):
        rhythm.fit_model(cfg, recs, 7, False, "no pretext")


def test_int8_aware_epochs_continue_the_float_fit_exactly():
    """fit_model is fit_float then fit_int8_aware: a run split in two (as bench/rhythm_int8.py splits
    it to try quantization-aware variants on one float network) gives the same weights."""
    torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
    import dataclasses

    from vigil.models import rhythm

    cfg = dataclasses.replace(_tiny(), qat_epochs=1)
    recs = rhythm.load_records(DATA, cfg.strip)[:4]
    whole = rhythm.fit_model(cfg, recs, 3, False, "whole").state_dict()
    fit = rhythm.fit_float(cfg, recs, 3, False, "float")
    split = rhythm.fit_int8_aware(fit, cfg, False, "int8-aware").state_dict()
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_fold_calibration_windows_come_from_training_records():
    from vigil.models import rhythm

    recs = rhythm.load_records(DATA, StripParams())
    a = rhythm.fold_calibration(recs[:3], 8, seed=0, fold=1)
    b = rhythm.fold_calibration(recs[:3], 8, seed=0, fold=1)
    assert a["ecg"].shape == (8, 1, StripParams().window) and len(a["rr"]) == 8
    assert np.array_equal(a["ecg"], b["ecg"])
    assert not np.array_equal(a["ecg"], rhythm.fold_calibration(recs[:3], 8, seed=0, fold=2)["ecg"])


def test_distillation_loss_is_the_tempered_kl_divergence():
    torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
    import dataclasses

    from scipy.special import log_softmax

    from vigil.models import rhythm

    cfg = dataclasses.replace(rhythm.Config(), distill_temperature=3.0)
    rng = np.random.default_rng(0)
    student = rng.normal(size=(6, 4)).astype(np.float32)
    teacher = log_softmax(rng.normal(size=(6, 4)), axis=1).astype(np.float32)
    p, logq = np.exp(log_softmax(teacher / 3, axis=1)), log_softmax(student / 3, axis=1)
    want = 9 * np.mean(np.sum(p * (np.log(p) - logq), axis=1))
    got = float(rhythm._distillation_loss(torch.from_numpy(student), teacher, cfg))
    assert got == pytest.approx(want, rel=1e-5) and got > 0
    same = float(rhythm._distillation_loss(torch.from_numpy(teacher), teacher, cfg))
    assert same == pytest.approx(0, abs=1e-6)


def test_a_distilled_student_learns_from_teachers_trained_on_its_own_records():
    """fit_model with ``teachers`` trains them on the same records (seeds seed + t) unless given; the
    ensemble target is their mean log-probability, and the distillation term changes the student."""
    torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
    import dataclasses

    from scipy.special import log_softmax

    from vigil.models import rhythm

    base = _tiny()
    cfg = dataclasses.replace(base, teachers=(0, 5), distill_weight=5.0)
    recs = rhythm.load_records(DATA, cfg.strip)[:4]
    teachers = rhythm.fit_teachers(cfg, recs, 3, False, "t")
    alone = rhythm.fit_model(base, recs, 3 + 5, False, "teacher 5").state_dict()
    assert all(torch.equal(alone[k], teachers[1].state_dict()[k]) for k in alone)
    x, _, _ = rhythm.sliding(recs)
    mean = np.mean([log_softmax(rhythm.torch_scores(t, x), axis=1) for t in teachers], axis=0)
    assert np.allclose(rhythm.teacher_log_probs(teachers, x), mean, atol=1e-6)
    given = rhythm.fit_model(cfg, recs, 3, False, "given", teachers=teachers).state_dict()
    trained = rhythm.fit_model(cfg, recs, 3, False, "trained").state_dict()
    assert all(torch.equal(given[k], trained[k]) for k in given)
    plain = rhythm.fit_model(base, recs, 3, False, "plain").state_dict()
    assert not all(torch.equal(given[k], plain[k]) for k in given)


def test_folds_and_teachers_trained_side_by_side_give_the_same_networks():
    torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
    import dataclasses

    from vigil.models import rhythm

    cfg = dataclasses.replace(_tiny(), folds=2, calibration_windows=16)
    recs = rhythm.load_records(DATA, cfg.strip)[:8]
    quiet = dict(progress=False, log=lambda *_: None)
    one = rhythm.cross_validate(cfg, recs, 0, workers=1, **quiet)["_oof"]
    two = rhythm.cross_validate(cfg, recs, 0, workers=2, final=True, **quiet)
    assert one["fp32"] == two["_oof"]["fp32"] and one["int8"] == two["_oof"]["int8"]
    final = rhythm.fit_model(cfg, recs, 0, False, "final").state_dict()  # what train() runs with 1 worker
    assert all(torch.equal(final[k], two["_final"][k]) for k in final)
    tcfg = dataclasses.replace(cfg, teachers=(0, 1))
    a = rhythm.fit_teachers(tcfg, recs, 3, False, "a", workers=1)
    b = rhythm.fit_teachers(tcfg, recs, 3, False, "b", workers=2)
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(x.state_dict()[k], y.state_dict()[k]) for k in x.state_dict())
