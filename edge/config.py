"""Monitor configuration: one typed, frozen object from TOML plus ``section.key=value`` overrides.

Layers, later wins: the defaults written in the dataclasses below <- one TOML file (with no file:
the embedded demo profile ``defaults.toml``, simulated devices and no broker) <- overrides such as
``alarms.tachycardia.threshold=160`` or ``devices.0.source=udp://0.0.0.0:9000``. Every key is
checked when loaded: unknown keys, wrong types, out-of-range or inconsistent values raise
:class:`ConfigError` naming the key path, the bad value and where it came from.
``deploy/vigil.example.toml`` documents every key.

``[alarms]`` is the alarm engine's own schema: :attr:`Config.alarms` is a
:class:`vigil.edge.alarms.AlarmConfig`, ready for :class:`~vigil.edge.alarms.AlarmEngine`. Its scalar
keys are the engine settings and ``[alarms.<name>]`` holds one :class:`~vigil.edge.alarms.AlarmRule`
per name in :data:`~vigil.edge.alarms.ALARMS`; keys left out keep ``AlarmConfig()``'s values. TOML
has no null, so a rule's ``escalation_after_s = 0`` means never (None) and ``clear_threshold`` equal
to ``threshold`` means no hysteresis (None); the dump writes them that way.

:meth:`Config.to_toml` writes the effective configuration; loading it back gives an equal
``Config``. Secrets never live here: the MQTT password is read from ``mqtt.password_file`` at
connect time and a broker URL carrying credentials is refused, so the dump is safe to print.
"""

from __future__ import annotations

import dataclasses
import math
import re
import socket
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .alarms import ALARMS, AlarmConfig, AlarmRule, is_upper_limit, unit_of
from .messages import Priority, topic

#: The embedded configuration ``load_config(None)`` reads: the demo profile, no broker needed.
DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")

DEVICE_KINDS = ("ecg", "eeg", "emg")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range. ``key`` is its dotted
    path (``alarms.tachycardia.threshold``, ``devices.2.id``), ``also`` the other keys of a rule
    that involves several, ``origin`` where the value came from (a file or a ``--set``)."""

    def __init__(self, key: str, message: str, origin: str = "", also: tuple[str, ...] = ()) -> None:
        self.key, self.message, self.origin, self.also = key, message, origin, also
        super().__init__(key, message, origin, also)

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        return f"{text} ({self.origin})" if self.origin else text

    def under(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` prepended to its key path."""
        also = tuple(_join(prefix, k) for k in self.also)
        return ConfigError(_join(prefix, self.key), self.message, self.origin, also)

    def with_origin(self, origin: str) -> ConfigError:
        return ConfigError(self.key, self.message, origin, self.also)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _show(value: object) -> str:
    """A short, TOML-ish rendering of a bad value for error messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = f"an array {value!r}"
    elif isinstance(value, str | int | float):
        text = repr(value)
    else:
        text = f"{type(value).__name__} {value}"
    return text if len(text) <= 80 else text[:77] + "..."


def _num(default: float, lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Any:
    """A numeric field in ``[lo, hi]`` (``(lo, hi]`` with ``above``)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "above": above})


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


def _check_topic_level(key: str, value: str) -> None:
    """``value`` must be usable as one MQTT topic level (the rule of :func:`messages.topic`)."""
    try:
        topic(value, "x", "status")
    except ValueError:
        raise ConfigError(
            key, f"must be a non-empty MQTT topic level without / + # or NUL, got {_show(value)}"
        ) from None


def _check_range(
    key: str, value: float, lo: float | None, hi: float | None, above: bool = False, unit: str = ""
) -> None:
    """``value`` in ``[lo, hi]`` (``(lo, hi]`` with ``above``; None: unbounded), else ConfigError."""
    if lo is not None and (value <= lo if above else value < lo) or hi is not None and value > hi:
        parts = [] if lo is None else [f"> {lo:g}" if above else f">= {lo:g}"]
        parts += [] if hi is None else [f"<= {hi:g}"]
        rule = " and ".join(parts) + (f" ({unit})" if unit else "")
        raise ConfigError(key, f"must be {rule}, got {_show(value)}")


class _Section:
    """Range checks from field metadata, then the section's own rules (``_check``), on every
    construction; errors carry key paths relative to the section."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, meta = getattr(self, f.name), f.metadata
            if "lo" in meta:
                _check_range(f.name, value, meta["lo"], meta["hi"], meta["above"])
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(f.name, f"must be one of {', '.join(meta['choices'])}; got {_show(value)}")
        self._check()

    def _check(self) -> None:
        """Rules that involve more than one field."""


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class MonitorConfig(_Section):
    """``[monitor]``: who this monitor is and how it paces its work."""

    site: str = "local"
    id: str = ""  # "": this host's name
    tick_s: float = _num(0.1, 0.0, 10.0, above=True)
    queue_blocks: int = _num(512, 1, 1_000_000)

    def _check(self) -> None:
        _check_topic_level("site", self.site)
        if self.id:
            _check_topic_level("id", self.id)

    @property
    def name(self) -> str:
        """``id``, or this host's name when ``id`` is empty."""
        return self.id or re.sub(r"[/+#\x00]", "-", socket.gethostname()) or "vigil"


@dataclass(frozen=True)
class DeviceConfig(_Section):
    """One ``[[devices]]`` entry: a source of frames and what it is expected to carry."""

    id: str
    source: str
    kind: str = _choice("ecg", DEVICE_KINDS)
    channels: int = _num(1, 1, 64)
    fs: float = _num(250.0, 1.0, 1_000_000.0)
    label: str = ""
    #: The wearer has a pacemaker: paced beats look ventricular to the beat network (it was trained
    #: without paced records, as AAMI EC57 asks), so its classes are not used for this device.
    paced: bool = False

    def _check(self) -> None:
        _check_topic_level("id", self.id)
        params = _check_source(self.source)
        if "kind" in params and params["kind"].lower() != self.kind:
            raise ConfigError(
                "kind", f"is {self.kind!r} but the source says kind={params['kind']}", also=("source",)
            )
        if "fs" in params:
            try:
                source_fs = float(params["fs"])
            except ValueError:
                raise ConfigError("source", f"fs={params['fs']!r} is not a number") from None
            if source_fs != self.fs:
                raise ConfigError(
                    "fs", f"is {self.fs:g} but the source says fs={params['fs']}", also=("source",)
                )


@cache
def _source_schemes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from vigil.firmware_bridge.sources import FORMS

    return tuple(dict.fromkeys(f.split("://")[0] for f in FORMS)), FORMS


def _check_source(source: str) -> dict[str, str]:
    """Check the form of a device source string without opening it; return its query parameters."""
    schemes, forms = _source_schemes()
    try:
        url = urlsplit(source)
        port = url.port
    except ValueError as exc:
        raise ConfigError("source", f"{_show(source)} is not a valid source: {exc}") from None
    scheme = url.scheme.lower()
    if scheme not in schemes:
        raise ConfigError("source", f"unknown source {_show(source)}; use one of: {', '.join(forms)}")
    if scheme in ("udp", "tcp") and (not url.hostname or port is None):
        raise ConfigError("source", f"{_show(source)}: expected {scheme}://HOST:PORT")
    if scheme in ("serial", "replay") and not url.netloc + url.path:
        raise ConfigError("source", f"{_show(source)}: expected {scheme}:///PATH")
    if scheme == "ble" and not url.netloc:
        raise ConfigError("source", f"{_show(source)}: expected ble://ADDRESS or ble://name/NAME")
    return {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}


# ----------------------------------------------------------------------------------------------
# Alarms: the engine's own schema (edge.alarms.AlarmConfig / AlarmRule), checked here with key paths.
#
# TOML conventions for the two AlarmRule fields that may be None:
#   clear_threshold     None means "= threshold" (no hysteresis). The dump writes the threshold;
#                       a clear_threshold equal to the threshold loads as None.
#   escalation_after_s  None means "never". TOML has no null: 0 means never (the dump writes 0).
# A key left out keeps the engine's default for that alarm (AlarmConfig()), not AlarmRule's.

#: The engine's built-in alarm configuration: the defaults of every [alarms] key.
ENGINE_DEFAULTS = AlarmConfig()

#: Ranges of the AlarmRule timing fields, seconds: (lo, hi, lo exclusive). escalation_after_s 0 = never.
_RULE_RANGES: dict[str, tuple[float, float, bool]] = {
    "condition_delay_s": (0.0, 3600.0, False),
    "clear_delay_s": (0.0, 3600.0, False),
    "escalation_after_s": (0.0, 86_400.0, False),
}
#: Ranges of the engine settings, the scalar keys of [alarms].
_SETTING_RANGES: dict[str, tuple[float, float, bool]] = {
    "stale_after_s": (0.0, 3600.0, True),
    "silence_s": (0.0, 86_400.0, True),
    "min_rr_for_af": (1, 100_000, False),
    "model_hold_s": (0.0, 3600.0, True),
    "baseline_learn_s": (0.0, 86_400.0, True),
    "baseline_tau_s": (0.0, 30 * 86_400.0, True),
}
#: What each alarm's value can be by definition (not a clinical choice), so where its threshold and
#: clear_threshold must lie: (lo, hi, lo exclusive), None = unbounded. An alarm not listed here (one
#: the engine adds later) only needs finite thresholds.
_VALUE_DOMAINS: dict[str, tuple[float | None, float | None, bool]] = {
    "device_lost": (0.0, None, True),  # seconds since the newest sample
    "battery_low": (0.0, 100.0, False),  # charge, %
    "lead_off": (0.0, 1.0, True),  # 1 when the lead is off, else 0
    "poor_signal": (0.0, 1.0, False),  # quality score
    "asystole": (0.0, None, True),  # seconds since the last beat
    "ventricular_run": (1.0, None, False),  # consecutive V beats
    "ectopy": (0.0, None, False),  # V beats per minute
    "bradycardia": (0.0, None, True),  # bpm
    "tachycardia": (0.0, None, True),  # bpm
    "pause": (0.0, None, True),  # seconds since the last beat
    "irregular_rhythm": (None, None, False),  # COSEn: any finite value
    "atrial_fibrillation": (0.0, 1.0, False),  # probability
    "seizure": (0.0, None, True),  # ratio to the device's baseline
    "seizure_model": (0.0, 1.0, False),  # probability
    "emg_burst": (0.0, None, True),  # ratio to the device's baseline
}


def _rule_from_toml(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Range-check the timing keys of one ``[alarms.<name>]`` table and map ``escalation_after_s = 0``
    to the engine's None (never)."""
    for name, (lo, hi, above) in _RULE_RANGES.items():
        if name in kwargs:
            _check_range(
                name, kwargs[name], lo, hi, above, "s; 0 = never" if name == "escalation_after_s" else ""
            )
    if kwargs.get("escalation_after_s") == 0:
        kwargs["escalation_after_s"] = None
    return kwargs


def _rule_to_toml(rule: AlarmRule) -> dict[str, Any]:
    """An AlarmRule as TOML data: None written as the TOML convention above."""
    data = {f.name: _to_data(getattr(rule, f.name)) for f in dataclasses.fields(rule)}
    data["clear_threshold"] = rule.clear_level
    data["escalation_after_s"] = 0.0 if rule.escalation_after_s is None else rule.escalation_after_s
    return data


def _level(alarm: str, value: float) -> str:
    unit = unit_of(alarm) if alarm in ALARMS else ""
    return f"{value:g} {unit}" if unit else f"{value:g}"


def _check_rule(alarm: str, rule: AlarmRule) -> None:
    """One alarm's own rules; keys relative to its table."""
    for name, (lo, hi, above) in _RULE_RANGES.items():
        value = getattr(rule, name)
        if value is not None:
            _check_range(name, value, lo, hi, above, "s; 0 = never" if name == "escalation_after_s" else "")
    lo, hi, above = _VALUE_DOMAINS.get(alarm, (None, None, False))
    for name in ("threshold", "clear_threshold"):
        value = getattr(rule, name)
        if value is not None:
            _check_range(name, value, lo, hi, above, unit_of(alarm) if alarm in ALARMS else "")


def _check_clear_side(alarm: str, rule: AlarmRule) -> None:
    """``clear_threshold`` must be on the side of ``threshold`` the value returns to."""
    if rule.clear_threshold is None or alarm not in ALARMS:
        return
    upper, t, c = is_upper_limit(alarm), rule.threshold, rule.clear_threshold
    if c > t if upper else c < t:
        side, op = ("at or above", "<=") if upper else ("at or below", ">=")
        raise ConfigError(
            "clear_threshold",
            f"{alarm} is raised {side} its threshold, so clear_threshold must be {op} threshold "
            f"({_level(alarm, t)}); got {c:g}",
            also=("threshold",),
        )


def _check_below(a: AlarmConfig, low: str, high: str, what: str) -> None:
    """Alarm ``low``'s ``what`` level must be below alarm ``high``'s threshold."""
    lo_rule, hi_rule = getattr(a, low), getattr(a, high)
    value = lo_rule.threshold if what == "threshold" else lo_rule.clear_level
    if value >= hi_rule.threshold:
        raise ConfigError(
            f"{low}.{what}",
            f"must be < alarms.{high}.threshold ({_level(high, hi_rule.threshold)}), got {value:g}",
            also=(f"{high}.threshold",),
        )


def check_alarms(a: AlarmConfig) -> None:
    """Every rule of the ``[alarms]`` table :class:`AlarmConfig` ``a``, beyond what the engine checks
    itself; :class:`ConfigError` keys are relative to the table (``tachycardia.threshold``)."""
    for name, (lo, hi, above) in _SETTING_RANGES.items():
        _check_range(name, getattr(a, name), lo, hi, above)
    rules = a.rules()
    for name, rule in rules.items():
        try:
            _check_rule(name, rule)
        except ConfigError as exc:
            raise exc.under(name) from None
    # Limits on the same value, in the order the engine assumes (asystole supersedes pause).
    _check_below(a, "bradycardia", "tachycardia", "threshold")
    _check_below(a, "pause", "asystole", "threshold")
    for name, rule in rules.items():
        try:
            _check_clear_side(name, rule)
        except ConfigError as exc:
            raise exc.under(name) from None
    # A bradycardia that could clear only inside the tachycardia range, or the reverse.
    _check_below(a, "bradycardia", "tachycardia", "clear_threshold")
    t_clear, b_thr = a.tachycardia.clear_level, a.bradycardia.threshold
    if t_clear <= b_thr:
        raise ConfigError(
            "tachycardia.clear_threshold",
            f"must be > alarms.bradycardia.threshold ({_level('bradycardia', b_thr)}), got {t_clear:g}",
            also=("bradycardia.threshold",),
        )


@dataclass(frozen=True)
class TLSConfig(_Section):
    """``[mqtt.tls]``: file paths; empty ``ca`` with ``mqtts://`` uses the system trust store."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    def _check(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError(
                "key" if self.cert else "cert",
                "cert and key go together: set both or neither",
                also=("cert" if self.cert else "key",),
            )


MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class MQTTConfig(_Section):
    """``[mqtt]``: the broker alerts and vitals go to (MQTT 5, QoS 1)."""

    enabled: bool = True
    url: str = "mqtt://localhost:1883"
    client_id: str = ""  # "": vigil-<monitor name>
    username: str = ""
    password_file: str = ""
    tls: TLSConfig = TLSConfig()
    keepalive_s: int = _num(30, 5, 3600)
    session_expiry_s: int = _num(3600, 0, 2**32 - 1)
    inflight: int = _num(20, 1, 65_535)
    vitals_period_s: float = _num(10.0, 0.0, 86_400.0)
    fhir: bool = False

    def _check(self) -> None:
        try:
            url = urlsplit(self.url)
            url.port  # noqa: B018 - raises ValueError when out of range
        except ValueError as exc:
            raise ConfigError("url", f"{_show(self.url)} is not a valid URL: {exc}") from None
        if url.scheme not in MQTT_SCHEMES:
            raise ConfigError(
                "url", f"must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {_show(self.url)}"
            )
        if not url.hostname:
            raise ConfigError("url", f"has no host: {_show(self.url)}")
        if url.username is not None or url.password is not None:
            raise ConfigError("url", "must not carry credentials; use mqtt.username and mqtt.password_file")
        if url.path not in ("", "/") or url.query or url.fragment:
            raise ConfigError("url", f"must be just scheme://HOST[:PORT], got {_show(self.url)}")
        if url.scheme == "mqtt" and (self.tls.ca or self.tls.cert):
            raise ConfigError(
                "url",
                "is plain mqtt:// but mqtt.tls files are set; use mqtts://",
                also=("tls.ca", "tls.cert"),
            )
        if self.password_file and not self.username:
            raise ConfigError(
                "username", "is required when mqtt.password_file is set", also=("password_file",)
            )
        if "\x00" in self.client_id or len(self.client_id.encode()) > 65_535:
            raise ConfigError(
                "client_id", f"must be UTF-8 without NUL, up to 65535 bytes, got {_show(self.client_id)}"
            )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        url = urlsplit(self.url)
        return url.port or MQTT_SCHEMES[url.scheme]

    @property
    def tls_enabled(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


@dataclass(frozen=True)
class StorageConfig(_Section):
    """``[storage]``: the durable outbox alerts wait in until the broker has them."""

    outbox_path: str = "~/.local/state/vigil/outbox"
    max_bytes: int = _num(64 * 2**20, 2**16, 2**40)

    def _check(self) -> None:
        if not self.outbox_path.strip():
            raise ConfigError("outbox_path", "must not be empty")

    @property
    def outbox(self) -> Path:
        """``outbox_path`` with ``~`` expanded."""
        return Path(self.outbox_path).expanduser()


@dataclass(frozen=True)
class ModelsConfig(_Section):
    """``[models]``: the networks the monitor runs (:mod:`vigil.edge.networks`), from ``dir`` (""
    = the shipped zoo), each verified against its model card at load. ``vigil run`` reloads them on
    SIGHUP; a refused model leaves the running one in place."""

    enabled: bool = True
    dir: str = ""
    precision: str = _choice("int8", ("int8", "fp32"))
    providers: str = _choice("auto", ("auto", "cpu", "cuda", "tensorrt"))
    threads: int = _num(1, 1, 64)
    ecg_beats: bool = True
    ecg_rhythm: bool = True
    eeg_seizure: bool = True
    rhythm_every_s: float = _num(10.0, 0.5, 600.0)

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Enabled networks: task -> options for :meth:`vigil.edge.networks.Networks.load`."""
        if not self.enabled:
            return {}
        out: dict[str, dict[str, Any]] = {}
        if self.ecg_beats:
            out["ecg-beats"] = {}
        if self.ecg_rhythm:
            out["ecg-rhythm"] = {"every_s": self.rhythm_every_s}
        if self.eeg_seizure:
            out["eeg-seizure"] = {}
        return out


@dataclass(frozen=True)
class Config(_Section):
    """The whole monitor configuration. ``alarms`` is the engine's own :class:`AlarmConfig`: pass it
    to :class:`~vigil.edge.alarms.AlarmEngine` as it is."""

    monitor: MonitorConfig = MonitorConfig()
    devices: tuple[DeviceConfig, ...] = ()
    alarms: AlarmConfig = ENGINE_DEFAULTS
    mqtt: MQTTConfig = MQTTConfig()
    storage: StorageConfig = StorageConfig()
    models: ModelsConfig = ModelsConfig()

    def _check(self) -> None:
        try:
            check_alarms(self.alarms)
        except ConfigError as exc:
            raise exc.under("alarms") from None
        seen: dict[str, int] = {}
        for i, dev in enumerate(self.devices):
            if dev.id in seen:
                raise ConfigError(
                    f"devices.{i}.id",
                    f"duplicate device id {dev.id!r} (also devices.{seen[dev.id]}.id)",
                    also=(f"devices.{seen[dev.id]}.id",),
                )
            seen[dev.id] = i

    @property
    def mqtt_client_id(self) -> str:
        """``mqtt.client_id``, or ``vigil-<monitor name>`` when it is empty."""
        return self.mqtt.client_id or f"vigil-{self.monitor.name}"

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML data: tables, arrays, strings, numbers, booleans."""
        return _to_data(self)

    def to_toml(self) -> str:
        """Every key, as TOML that :func:`load_config` reads back to an equal ``Config``."""
        lines: list[str] = []
        _emit_table(self.to_dict(), "", lines)
        return "\n".join(lines).lstrip("\n") + "\n"


# ----------------------------------------------------------------------------------------------
# Building from TOML data


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _sequence_item(tp: Any) -> Any | None:
    """``X`` for ``tuple[X, ...]``, else None."""
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0]
    return None


def _convert(tp: Any, value: Any, key: str) -> Any:
    """``value`` from TOML as type ``tp``, or :class:`ConfigError` naming ``key``."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    item = _sequence_item(tp)
    if item is not None:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected an array, got {_show(value)}")
        return tuple(_convert(item, v, f"{key}.{i}") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {_show(value)}")
        return value
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))  # X | None: TOML has no null, so X
        return _convert(inner, value, key)
    if tp is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(key, f"expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_show(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(key, f"is not valid Unicode text: {_show(value)}") from None
        return value
    if tp is Priority:
        names = ", ".join(p.value for p in Priority)
        if not isinstance(value, str) or value not in {p.value for p in Priority}:
            raise ConfigError(key, f"must be one of {names}; got {_show(value)}")
        return Priority(value)
    raise TypeError(f"no TOML conversion for {tp!r}")  # a schema bug, not a user error


def _build(cls: type, data: Any, key: str, base: Any = None) -> Any:
    """An instance of section ``cls`` from the TOML table ``data`` found at ``key``; keys left out
    keep the values of ``base`` (None: the field defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(key, f"expected a table, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            where = f"[{key}]" if key else "the top level"
            raise ConfigError(
                f"{key}.{name}" if key else name, f"unknown key; {where} accepts {', '.join(fields)}"
            )
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(key, name), "is required")
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        if cls is AlarmConfig and name in ALARMS:  # each alarm's defaults are its engine default rule
            kwargs[name] = _build(AlarmRule, value, _join(key, name), getattr(ENGINE_DEFAULTS, name))
        else:
            kwargs[name] = _convert(hints[name], value, _join(key, name))
    try:
        if cls is AlarmRule:
            kwargs = _rule_from_toml(kwargs)
        elif cls is AlarmConfig:
            for name, (lo, hi, above) in _SETTING_RANGES.items():
                if name in kwargs:
                    _check_range(name, kwargs[name], lo, hi, above)
        made = cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)
    except ConfigError as exc:
        raise exc.under(key) from None
    except ValueError as exc:  # a check of the engine's that this module does not make first
        raise ConfigError(key, str(exc)) from None
    if isinstance(made, AlarmRule) and made.clear_threshold == made.threshold:
        made = dataclasses.replace(made, clear_threshold=None)  # the same rule, as the engine writes it
    return made


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """A :class:`Config` from parsed TOML data; keys left out keep their defaults."""
    return _build(Config, dict(data), "")


def _to_data(value: Any) -> Any:
    if isinstance(value, AlarmRule):
        return _rule_to_toml(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_data(v) for v in value]
    if isinstance(value, Priority):
        return value.value
    return value


# ----------------------------------------------------------------------------------------------
# TOML output


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _emit_table(data: dict[str, Any], name: str, lines: list[str]) -> None:
    """Append ``data`` as the table ``name``: its values first, then its sub-tables."""
    for k, v in data.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            if not v or any(not isinstance(x, dict) and not _is_table_array(x) for x in v.values()):
                lines += ["", f"[{_join(name, k)}]"]
            _emit_table(v, _join(name, k), lines)
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{_join(name, k)}]]"]
                _emit_table(item, _join(name, k), lines)


# ----------------------------------------------------------------------------------------------
# Overrides and loading


_INDEX = re.compile(r"[0-9]+")


def parse_value(text: str, as_string: bool = False) -> Any:
    """An override's value: a TOML value (``160``, ``false``, ``"a b"``, ``["x", "y"]``) or, when it
    is not one (or ``as_string`` and it is not a quoted string), the text itself."""
    text = text.strip()
    try:
        doc = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
    if list(doc) != ["v"] or as_string and not isinstance(doc["v"], str):
        return text
    return doc["v"]


def apply_override(data: dict[str, Any], override: str) -> str:
    """Set ``section.key=value`` (or ``devices.N.key=value``; ``N`` may be one past the last device
    to add one) in the TOML data ``data``; return the key path. Unknown keys raise ConfigError."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(key, f"an override is KEY=VALUE, e.g. mqtt.enabled=false; got {_show(override)}")
    parts, cls, node, path, i = key.split("."), Config, data, "", 0
    while True:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        name = parts[i]
        if name not in fields:
            where = f"[{path}]" if path else "the top level"
            raise ConfigError(
                f"{path}.{name}" if path else name, f"unknown key; {where} accepts {', '.join(fields)}"
            )
        tp, path, last = _hints(cls)[name], _join(path, name), i == len(parts) - 1
        item = _sequence_item(tp)
        if dataclasses.is_dataclass(tp) or item is not None and dataclasses.is_dataclass(item):
            if last and item is not None:  # the whole array: devices=[] or [{id = "a", source = "..."}]
                node[name] = parse_value(text)
                return path
            if last:
                raise ConfigError(path, "is a table; set one of its keys, e.g. " + _example_key(path, tp))
            child = node.setdefault(name, {} if item is None else [])
            if item is None:
                if not isinstance(child, dict):
                    raise ConfigError(path, f"expected a table, got {_show(child)}")
                node, cls, i = child, tp, i + 1
                continue
            if not isinstance(child, list):
                raise ConfigError(path, f"expected an array of tables, got {_show(child)}")
            index = parts[i + 1]
            if not _INDEX.fullmatch(index) or int(index) > len(child):
                raise ConfigError(
                    f"{path}.{index}",
                    f"no such entry: there are {len(child)} (from 0; {path}.{len(child)}.KEY adds one)",
                )
            if int(index) == len(child):
                child.append({})
            node, cls, path, i = child[int(index)], item, f"{path}.{int(index)}", i + 2
            if not isinstance(node, dict):
                raise ConfigError(path, f"expected a table, got {_show(node)}")
            if i == len(parts):
                raise ConfigError(path, "is a table; set one of its keys, e.g. " + _example_key(path, item))
            continue
        if not last:
            raise ConfigError(path, f"is a value, not a table; nothing is below it ({key!r})")
        node[name] = parse_value(text, as_string=tp is str)
        return path


def _example_key(path: str, cls: type) -> str:
    return f"{path}.{dataclasses.fields(cls)[0].name}=..."


def _has_key(data: Any, key: str) -> bool:
    for part in key.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and _INDEX.fullmatch(part) and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read configuration {label}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{label} is not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults <- the TOML file ``path`` (None: the embedded demo profile) <- ``overrides``
    (``section.key=value``, applied in order). Raises :class:`ConfigError` for any bad key or value."""
    label = "embedded defaults.toml" if path is None else str(path)
    data = _read_toml(DEFAULTS_FILE if path is None else Path(path), label)
    from_file = _clone(data)
    origins: dict[str, str] = {}
    for override in overrides:
        try:
            origins[apply_override(data, override)] = f"--set {override}"
        except ConfigError as exc:
            raise exc.with_origin(f"--set {override}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise exc.with_origin(_origin((exc.key, *exc.also), origins, from_file, label)) from None


def _origin(keys: tuple[str, ...], overrides: dict[str, str], from_file: dict[str, Any], label: str) -> str:
    """Where the value at one of ``keys`` (or the table holding it) came from: an override, the file."""
    for key in keys:
        if key in overrides:
            return overrides[key]
    for key in keys:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            k = ".".join(parts[:n])
            if k in overrides:
                return overrides[k]
            if _has_key(from_file, k):
                return label
            below = [o for p, o in overrides.items() if p.startswith(k + ".")]
            if below:
                return below[-1]
    return ""


def _clone(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _clone(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_clone(v) for v in data]
    return data
