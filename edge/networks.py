"""The monitor's networks: shipped models run on every session's stream, one batched call per tick.

Three networks feed the alarm engine (each optional, each verified against its card at load by
:func:`vigil.export.runtime.load_model`; ONNX Runtime only, no torch):

* ``ecg-beats`` (:class:`BeatNetwork`): every beat the session's QRS detector finds becomes a
  ``beat-window/1`` input (:class:`~vigil.kernels.beat_features.BeatWindows`); its scores are pooled
  with the lead's recent look-alike beats when the card says so
  (:class:`~vigil.kernels.beat_pooling.MorphologyPooling`) and its AAMI class goes to
  ``Features.model[MODEL_BEAT_CLASSES]``: the ventricular-run and ectopy alarms.
* ``ecg-rhythm`` (:class:`RhythmNetwork`): every ``rhythm_every_s`` the last 10 s of the lead
  (``rhythm-strip/1``); P(AF) (mean of the latest three windows) and the label go to
  :data:`~vigil.edge.alarms.MODEL_AF_PROBABILITY` and :data:`~vigil.edge.alarms.MODEL_RHYTHM`: the
  atrial-fibrillation alarm.
* ``eeg-seizure`` (:class:`SeizureNetwork`): every ``eeg-segment/1`` window of every EEG channel;
  the largest P(seizure) over the channels of the newest windows goes to
  :data:`~vigil.edge.alarms.MODEL_SEIZURE_PROBABILITY`: the ``seizure_model`` alarm.

**Data path.** After a session's kernels ran on a chunk, :meth:`Networks.feed` hands the chunk (and
the beats the detector found in it) to each network of the session's modality; the network's
per-session preprocessor (held in ``session.net_state``, so a kernel restart forgets it) turns it
into zero or more input rows, which wait. :meth:`Networks.run`, once per monitor tick, stacks the
waiting rows of all sessions into one inference call per network and hands each session its share
of the outputs (``session.model_pending``, merged into its next ``Features.model``).

**Not classified, counted.** Rows whose window holds NaN or absurd samples, flat lines, stream edges
(the preprocessors' own reasons), and every row of a session whose latest signal quality is poor
(lead off, or quality score at or below the poor-signal threshold) are not classified; they are
counted per (network, reason) in :attr:`Networks.skipped`.

**Paced wearers** (``[[devices]] paced = true``): the beat network is not run for them and their
beats are counted as "paced"; the rhythm and seizure networks still are.

**Hot swap.** :meth:`Networks.load` loads a model and swaps it in; a corrupt, truncated or
mismatched model (:class:`~vigil.export.card.ModelError`) is refused with a logged error and the
running network is kept. A swap whose pre- or post-processing differs drops the per-session preprocessors
(they restart on the next chunk); an inference error is counted and logged, never fatal.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vigil.export.card import ModelError
from vigil.export.runtime import LoadedModel, load_model
from vigil.firmware_bridge.protocol import ChannelKind
from vigil.kernels.beat_features import RR_FEATURES as BEAT_RR_FEATURES
from vigil.kernels.beat_features import BeatWindowParams, BeatWindows
from vigil.kernels.beat_pooling import MorphologyPooling, PoolingParams
from vigil.kernels.eeg_segment import EEGSegmenter
from vigil.kernels.rhythm_strip import RR_FEATURES as STRIP_RR_FEATURES
from vigil.kernels.rhythm_strip import StripParams, windows_from_signal

from .alarms import MODEL_AF_PROBABILITY, MODEL_BEAT_CLASSES, MODEL_RHYTHM, MODEL_SEIZURE_PROBABILITY

log = logging.getLogger(__name__)


def zoo_dir() -> Path:
    """The shipped models' folder (``vigil/models/zoo``), found without importing ``vigil.models``."""
    spec = find_spec("vigil.models")
    roots = list(spec.submodule_search_locations or []) if spec else []
    if not roots:
        raise ModelError("cannot find the vigil.models package holding the model zoo")
    return Path(roots[0]) / "zoo"


def device_phase(device: int, stream: int) -> float:
    """A fraction in [0, 1) that spreads devices' periodic work over its period (Knuth's
    multiplicative hash of the device and stream numbers)."""
    return ((device * 31 + stream) * 2654435761 % 4096) / 4096


def softmax(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Rows:
    """One session's input rows for one network, waiting for the tick's call; ``meta`` is what the
    network needs to read its outputs back."""

    inputs: dict[str, np.ndarray]
    meta: Any = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


class Network(Protocol):
    """What :class:`Networks` needs of a network (see the concrete classes below)."""

    task: str
    kind: ChannelKind
    model: LoadedModel

    def start(self, fs: float, n_channels: int, first_sample: int, phase: float) -> Any: ...

    def prepare(
        self, state: Any, x: np.ndarray, beats: np.ndarray, ok: bool, skipped: Counter
    ) -> Rows | None: ...

    def read(self, rows: Rows, scores: np.ndarray) -> dict[str, Any]: ...

    def same_preprocessing(self, other: Network) -> bool: ...


class _Base:
    task = ""
    kind = ChannelKind.ECG

    def __init__(self, model: LoadedModel) -> None:
        if model.card.task != self.task:
            raise ModelError(f"{model.card.name}: a {model.card.task!r} model, not {self.task!r}")
        self.model = model
        self.classes = tuple(model.card.classes)

    def same_preprocessing(self, other: Network) -> bool:
        a, b = self.model.card, other.model.card
        same_pre = dict(a.preprocessing) == dict(b.preprocessing)
        return same_pre and dict(a.postprocessing) == dict(b.postprocessing)

    def _check_inputs(self, produced: dict[str, tuple[int, ...]]) -> None:
        """The preprocessing the card names must produce the inputs the card (and so the network,
        which :func:`~vigil.export.runtime.load_model` checked against it) takes: ``produced`` maps
        input name -> shape without the batch axis."""
        card = self.model.card
        takes = {k: tuple(v[1:]) for k, v in card.inputs.items()}
        if takes != produced:
            raise ModelError(
                f"{card.name}: its preprocessing ({card.preprocessing.get('id')}) makes inputs {produced}, "
                f"but the network takes {takes}"
            )

    @staticmethod
    def _params_of(cls: Any, card: Any) -> Any:
        try:
            return cls.from_card(card.preprocessing)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{card.name}: preprocessing not supported: {exc}") from None


def pooling_of(card: Any) -> PoolingParams | None:
    """The card's ``morphology-pooling/1`` parameters, None when it names no post-processing."""
    if not card.postprocessing:
        return None
    try:
        return PoolingParams.from_card(card.postprocessing)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{card.name}: postprocessing not supported: {exc}") from None


@dataclass
class _BeatState:
    windows: BeatWindows
    offset: int  # session sample index of the first sample fed (the detector counts from 0)
    chunks: list = field(default_factory=list)  # samples waiting for the next preprocessing call
    beats: list = field(default_factory=list)  # their beats (session sample indices)
    waiting: int = 0  # samples in ``chunks``
    pooling: MorphologyPooling | None = None  # the lead's recent beats (the card's post-processing)


class BeatNetwork(_Base):
    """``ecg-beats``: a class per detected beat; outputs the AAMI labels of the classified beats.

    The session's chunks (0.2 s) are gathered into ``feed_s`` of signal before the beat-window kernel
    runs on them: its cost is mostly per call (measured: 100 simulated devices, a call per 0.2-s
    chunk doubled the monitor's CPU time), while a beat's class waits for its successor anyway."""

    task, kind = "ecg-beats", ChannelKind.ECG

    def __init__(self, model: LoadedModel, feed_s: float = 1.0) -> None:
        super().__init__(model)
        self.params = self._params_of(BeatWindowParams, model.card)
        self._check_inputs({"beat": (2, self.params.samples), "rr": (len(BEAT_RR_FEATURES),)})
        self.pooling = pooling_of(model.card)
        self.feed_s = float(feed_s)

    def start(self, fs: float, n_channels: int, first_sample: int, phase: float) -> _BeatState:
        # the first call comes after a device's own share of feed_s: devices do not all call at once
        pooling = MorphologyPooling(self.pooling) if self.pooling else None
        return _BeatState(
            BeatWindows(fs, self.params),
            first_sample,
            waiting=-int(phase * self.feed_s * fs),
            pooling=pooling,
        )

    def prepare(
        self, state: _BeatState, x: np.ndarray, beats: np.ndarray, ok: bool, skipped: Counter
    ) -> Rows | None:
        state.chunks.append(x[:, :1])
        if len(beats):
            state.beats.append(beats)
        state.waiting += len(x)
        if state.waiting < self.feed_s * state.windows.fs:
            return None
        chunk = state.chunks[0] if len(state.chunks) == 1 else np.concatenate(state.chunks)
        new = np.concatenate(state.beats) if state.beats else np.zeros(0, np.int64)
        state.chunks, state.beats, state.waiting = [], [], 0
        before = dict(state.windows.invalid)
        b = state.windows.process(chunk, new - state.offset)
        for reason, n in state.windows.invalid.items():
            if n > before.get(reason, 0):
                skipped[reason] += n - before.get(reason, 0)
        valid = b.valid
        if not ok and valid.any():
            skipped["poor_signal"] += int(valid.sum())
            return None
        if not valid.any():
            return None
        return Rows({"beat": b.beat[valid], "rr": b.rr[valid]}, state.pooling)

    def read(self, rows: Rows, scores: np.ndarray) -> dict[str, Any]:
        if rows.meta is not None:  # the session's pooling state; rows are read in stream order
            scores = rows.meta.process(rows.inputs["beat"][:, 0], scores)
        labels = [self.classes[i] for i in np.argmax(scores, axis=1)]
        return {MODEL_BEAT_CLASSES: labels}


@dataclass
class _RhythmState:
    fs: float
    ring: np.ndarray  # the lead's last ``len(ring)`` samples, circular
    pos: int = 0  # where the next sample goes (the oldest sample once full)
    filled: int = 0
    since: int = 0  # samples since the last window
    recent: deque = field(default_factory=deque)  # P(AF) of the latest windows, newest last

    def write(self, x: np.ndarray) -> None:
        n = len(self.ring)
        x = x[-n:]
        k = len(x)
        first = min(k, n - self.pos)
        self.ring[self.pos : self.pos + first] = x[:first]
        self.ring[: k - first] = x[first:]
        self.pos = (self.pos + k) % n
        self.filled = min(n, self.filled + k)

    def window(self) -> np.ndarray:
        """The samples held, oldest first."""
        return np.concatenate((self.ring[self.pos :], self.ring[: self.pos]))


class RhythmNetwork(_Base):
    """``ecg-rhythm``: every ``every_s`` the last window of the lead; outputs the label of that
    window and P(AF) averaged over the latest ``average`` windows.

    The strip handed to ``rhythm-strip/1`` is the window plus ``margin_s`` before it, so the band-pass
    has settled when the window starts (the network was trained on windows of filtered records). The
    average is what the card scores (a strip's class from all its windows, not from one): a single
    10-s window's P(AF) wobbles around the alarm threshold during AF (measured on CinC A00005: 0.52
    to 0.99 in 5-s steps), which would restart the alarm's condition delay every few windows."""

    task, kind = "ecg-rhythm", ChannelKind.ECG

    def __init__(
        self, model: LoadedModel, every_s: float = 10.0, margin_s: float = 2.0, average: int = 3
    ) -> None:
        super().__init__(model)
        self.params: StripParams = self._params_of(StripParams, model.card)
        self._check_inputs({"ecg": (1, self.params.window), "rr": (len(STRIP_RR_FEATURES),)})
        self.every_s, self.margin_s, self.average = float(every_s), float(margin_s), int(average)
        if "A" not in self.classes:
            raise ModelError(f"{model.card.name}: no AF class 'A' in {self.classes}")
        self._af = self.classes.index("A")

    def start(self, fs: float, n_channels: int, first_sample: int, phase: float) -> _RhythmState:
        ring = np.zeros(int(round((self.params.window_s + self.margin_s) * fs)))
        # windows at a phase of the device's own: devices that connected together do not all come due
        # in the same tick (each window's preprocessing costs about a millisecond)
        return _RhythmState(fs, ring, since=-int(phase * self.every_s * fs))

    def prepare(
        self, state: _RhythmState, x: np.ndarray, beats: np.ndarray, ok: bool, skipped: Counter
    ) -> Rows | None:
        state.write(x[:, 0])
        state.since += len(x)
        if state.filled < len(state.ring) or state.since < self.every_s * state.fs:
            return None
        state.since = 0
        if not ok:
            skipped["poor_signal"] += 1
            return None
        w = windows_from_signal(state.window(), state.fs, self.params)
        if not w.ok[0]:
            skipped["bad_samples"] += 1
            return None
        return Rows(w.inputs(), state)

    def read(self, rows: Rows, scores: np.ndarray) -> dict[str, Any]:
        p = softmax(scores)[-1]
        recent = rows.meta.recent
        recent.append(float(p[self._af]))
        while len(recent) > self.average:
            recent.popleft()
        return {MODEL_AF_PROBABILITY: float(np.mean(recent)), MODEL_RHYTHM: self.classes[int(np.argmax(p))]}


class SeizureNetwork(_Base):
    """``eeg-seizure``: every window of every EEG channel; outputs the largest P(seizure) over the
    channels of the newest windows."""

    task, kind = "eeg-seizure", ChannelKind.EEG

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        pre = model.card.preprocessing
        try:
            self.segmenter_args = dict(
                fs=float(pre["fs"]), window_s=float(pre["window_s"]), hop_s=float(pre["hop_s"]),
                band=tuple(float(v) for v in pre["band_hz"]), min_sd=float(pre["min_sd_uv"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{model.card.name}: preprocessing not supported: {exc}") from None
        a = self.segmenter_args
        self._check_inputs({"eeg": (1, int(round(a["fs"] * a["window_s"]))), "level": (1,)})
        if "seizure" not in self.classes:
            raise ModelError(f"{model.card.name}: no 'seizure' class in {self.classes}")
        self._seizure = self.classes.index("seizure")

    def start(self, fs: float, n_channels: int, first_sample: int, phase: float) -> EEGSegmenter:
        return EEGSegmenter(fs, n_channels, **self.segmenter_args)

    def prepare(
        self, state: EEGSegmenter, x: np.ndarray, beats: np.ndarray, ok: bool, skipped: Counter
    ) -> Rows | None:
        seg = state.process(x)
        valid = seg.valid.reshape(-1)
        if not len(valid):
            return None
        skipped["bad_samples"] += int((~valid).sum())
        if not ok and valid.any():
            skipped["poor_signal"] += int(valid.sum())
            return None
        if not valid.any():
            return None
        inputs = {k: v[valid] for k, v in seg.inputs().items()}
        newest = np.zeros_like(seg.valid)
        newest[-1] = True
        return Rows(inputs, newest.reshape(-1)[valid])

    def read(self, rows: Rows, scores: np.ndarray) -> dict[str, Any]:
        p = softmax(scores)[:, self._seizure]
        mask = rows.meta if rows.meta.any() else np.ones(len(p), bool)
        return {MODEL_SEIZURE_PROBABILITY: float(p[mask].max())}


BUILDERS = {"ecg-beats": BeatNetwork, "ecg-rhythm": RhythmNetwork, "eeg-seizure": SeizureNetwork}
TASKS = tuple(BUILDERS)


@dataclass
class NetworkStats:
    """Counters of one network since the monitor started."""

    calls: int = 0  # inference calls (one per tick with waiting rows)
    rows: int = 0  # rows classified
    errors: int = 0  # failed calls (their rows are lost, counted here)
    seconds: float = 0.0  # time in inference
    largest_batch: int = 0
    swaps: int = 0  # models swapped in after the first
    refused: int = 0  # models refused at load (ModelError); the running one was kept


@dataclass
class Networks:
    """The monitor's networks by task, the rows waiting for the next tick, and their counters.

    ``poor_quality``: a session whose latest quality score is at or below it (or whose lead is off)
    gets no rows classified (see the module docstring)."""

    poor_quality: float = 0.3
    #: Names of paced devices (a name, or the prefix of ``<name>-<number>`` names): the beat network
    #: is not run for them (its classes would call paced beats ventricular); counted as "paced".
    paced: tuple[str, ...] = ()
    nets: dict[str, Network] = field(default_factory=dict)
    stats: dict[str, NetworkStats] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # (task, reason) -> rows
    _waiting: dict[str, list[tuple[Any, Rows]]] = field(default_factory=dict)
    #: task -> preprocessing generation; a swap to other preprocessing starts a new one, and a
    #: session's state of an older generation is replaced at its next chunk
    _generation: Counter = field(default_factory=Counter)

    # -- models ----------------------------------------------------------------------------------

    def load(self, task: str, model: str | Path, precision: str = "int8", providers: str = "auto",
             threads: int = 1, **options: Any) -> bool:  # fmt: skip
        """Load ``model`` (a card or artifact path, or its stem) for ``task`` and swap it in; False
        (logged, counted, the running network kept) when it is refused."""
        if task not in BUILDERS:
            raise ValueError(f"unknown network task {task!r}; one of {', '.join(BUILDERS)}")
        st = self.stats.setdefault(task, NetworkStats())
        try:
            net = BUILDERS[task](load_model(Path(model), precision, providers, threads, task=task), **options)
        except ModelError as exc:
            st.refused += 1
            kept = "keeping the running one" if task in self.nets else "none running"
            log.error("%s model refused (%s): %s", task, kept, exc)
            return False
        self.swap(net)
        return True

    def load_all(
        self,
        folder: str | Path | None,
        tasks: Mapping[str, Mapping[str, Any]],
        precision: str = "int8",
        providers: str = "auto",
        threads: int = 1,
    ) -> dict[str, bool]:
        """:meth:`load` each of ``tasks`` (task -> options) from ``folder/<task>`` (None: the shipped
        zoo); task -> loaded, logged in one line."""
        root = Path(folder).expanduser() if folder else zoo_dir()
        done = {
            task: self.load(task, root / task, precision, providers, threads, **opts)
            for task, opts in tasks.items()
        }
        log.info(
            "models from %s: %s",
            root,
            ", ".join(f"{t} {'ok' if ok else 'REFUSED'}" for t, ok in done.items()),
        )
        return done

    def swap(self, net: Network) -> None:
        """Run ``net`` from now on; per-session state restarts if its preprocessing differs."""
        old = self.nets.get(net.task)
        st = self.stats.setdefault(net.task, NetworkStats())
        if old is not None:
            st.swaps += 1
            log.info("%s: swapped in %s %s", net.task, net.model.card.name, net.model.card.version)
        self.nets[net.task] = net
        if old is not None and not old.same_preprocessing(net):
            self._generation[net.task] += 1
            self._waiting.pop(net.task, None)  # rows prepared for the old network

    def drop(self, task: str) -> None:
        self.nets.pop(task, None)
        self._waiting.pop(task, None)

    # -- data ------------------------------------------------------------------------------------

    def feed(self, session: Any, x: np.ndarray, beats: np.ndarray, quality: float, lead_off: bool) -> None:
        """A session's newest chunk ``x`` [samples, channels] (kernel input, NaN gap fill included) and
        the beats found in it (session sample indices; empty for EEG/EMG)."""
        ok = not lead_off and not (math.isfinite(quality) and quality <= self.poor_quality)
        for task, net in self.nets.items():
            if net.kind != session.kind:
                continue
            if task == "ecg-beats" and self.is_paced(session.name):
                self.skipped[(task, "paced")] += len(beats)
                continue
            gen = self._generation[task]
            held = session.net_state.get(task)
            if held is None or held[0] != gen:
                first = session.n - len(x)
                state = net.start(session.fs, x.shape[1], first, device_phase(session.device, session.stream))
                held = session.net_state[task] = (gen, state)
            skipped: Counter = Counter()
            rows = net.prepare(held[1], x, beats, ok, skipped)
            for reason, n in skipped.items():
                self.skipped[(task, reason)] += n
            if rows is not None and len(rows):
                self._waiting.setdefault(task, []).append((session, rows))

    def is_paced(self, name: str) -> bool:
        return any(name == p or name.startswith(p + "-") for p in self.paced)

    def run(self) -> None:
        """One inference call per network over every waiting row; outputs to the sessions."""
        waiting, self._waiting = self._waiting, {}
        for task, items in waiting.items():
            net = self.nets.get(task)
            if net is None:
                continue
            st = self.stats[task]
            names = list(items[0][1].inputs)
            batch = {k: np.concatenate([r.inputs[k] for _, r in items]) for k in names}
            n = len(batch[names[0]])
            t0 = time.perf_counter()
            try:
                scores = net.model.run(batch)
            except Exception:  # an inference failure must never take the monitor down
                st.errors += 1
                log.exception("%s: inference failed on %d rows", task, n)
                continue
            finally:
                st.seconds += time.perf_counter() - t0
            st.calls += 1
            st.rows += n
            st.largest_batch = max(st.largest_batch, n)
            at = 0
            for session, rows in items:
                self.deliver(session, net.read(rows, scores[at : at + len(rows)]))
                at += len(rows)

    def deliver(self, session: Any, out: dict[str, Any]) -> None:
        """Merge one session's outputs into its next snapshot (beat labels append, values replace)
        and into its vitals summary (beat counts per class, latest values)."""
        pending, summary = session.model_pending, session.net_summary
        labels = out.get(MODEL_BEAT_CLASSES)
        if labels is not None:
            counts = summary.setdefault("beats", {})
            for c in labels:
                counts[c] = counts.get(c, 0) + 1
            if MODEL_BEAT_CLASSES in pending:
                out = {**out, MODEL_BEAT_CLASSES: list(pending[MODEL_BEAT_CLASSES]) + labels}
        summary.update((k, v) for k, v in out.items() if k != MODEL_BEAT_CLASSES)
        pending.update(out)

    def summary(self) -> dict[str, Any]:
        """Counters per task (for logs and the stats line)."""
        out: dict[str, Any] = {}
        for task, st in self.stats.items():
            skipped = {r: n for (t, r), n in self.skipped.items() if t == task}
            out[task] = {**st.__dict__, "skipped": skipped}
        return out


def load_networks(
    folder: str | Path | None = None,
    tasks: Mapping[str, Mapping[str, Any]] | None = None,
    precision: str = "int8",
    providers: str = "auto",
    threads: int = 1,
    poor_quality: float = 0.3,
) -> Networks:
    """The networks of ``tasks`` (task -> options; default all three) from ``folder`` (default the
    shipped zoo); a task whose model is missing or refused is logged and left out."""
    nets = Networks(poor_quality=poor_quality)
    nets.load_all(
        folder, tasks if tasks is not None else {t: {} for t in TASKS}, precision, providers, threads
    )
    return nets
