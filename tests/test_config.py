"""edge.config: defaults, the example file, every kind of error, overrides, dump round trips."""

from __future__ import annotations

import dataclasses
import inspect
import string
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.edge.alarms import ALARMS, AlarmConfig, AlarmEngine, AlarmRule
from vigil.edge.cli import main
from vigil.edge.config import (
    DEFAULTS_FILE,
    Config,
    ConfigError,
    DeviceConfig,
    apply_override,
    config_from_dict,
    load_config,
    parse_value,
)
from vigil.edge.messages import Priority
from vigil.kernels.rhythm import AF_COSEN_THRESHOLD, RhythmTracker

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "vigil.example.toml"


def _error(overrides: list[str] = (), text: str | None = None, tmp_path: Path | None = None) -> ConfigError:
    path = None
    if text is not None:
        path = tmp_path / "vigil.toml"
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


def _keys(data: object, prefix: str = "") -> set[str]:
    """Every leaf key path of TOML data (devices by index)."""
    if isinstance(data, dict):
        return set().union(*(_keys(v, f"{prefix}{k}.") for k, v in data.items())) if data else set()
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return set().union(*(_keys(v, f"{prefix}{i}.") for i, v in enumerate(data)))
    return {prefix.rstrip(".")}


# ------------------------------------------------------------------------------------------------
# Defaults and the example file


def test_built_in_defaults_are_valid_and_match_the_kernels():
    c = Config()
    a = c.alarms
    assert type(a) is AlarmConfig and a == AlarmConfig(), "[alarms] is the engine's own configuration"
    assert a.bradycardia.threshold == 40 and a.tachycardia.threshold == 150
    assert a.irregular_rhythm.threshold == AF_COSEN_THRESHOLD == -1.4
    tracker_defaults = inspect.signature(RhythmTracker).parameters
    assert a.asystole.threshold == tracker_defaults["asystole_s"].default == 4.0
    assert a.pause.threshold == tracker_defaults["pause_s"].default == 2.5
    assert a.asystole.priority is Priority.HIGH and a.asystole.latching
    assert c.mqtt.enabled and c.mqtt.url == "mqtt://localhost:1883" and c.mqtt.port == 1883
    assert c.devices == ()
    assert config_from_dict({}) == c
    assert all(isinstance(r, AlarmRule) for r in a.rules().values())
    assert tuple(a.rules()) == ALARMS


def test_alarms_table_is_exactly_the_engine_schema():
    data = Config().to_dict()["alarms"]
    settings_keys = {f.name for f in dataclasses.fields(AlarmConfig)} - set(ALARMS)
    assert set(data) == set(ALARMS) | settings_keys
    assert settings_keys == {
        "stale_after_s",
        "silence_s",
        "min_rr_for_af",
        "model_hold_s",
        "baseline_learn_s",
        "baseline_tau_s",
    }
    rule_keys = {f.name for f in dataclasses.fields(AlarmRule)}
    assert all(set(data[name]) == rule_keys for name in ALARMS)
    # None in the engine is written as TOML can say it: clear_threshold = threshold, escalation 0 = never
    assert AlarmConfig().asystole.clear_threshold is None and data["asystole"]["clear_threshold"] == 4.0
    assert AlarmConfig().pause.escalation_after_s is None and data["pause"]["escalation_after_s"] == 0.0
    # ... and read back as the engine's None
    c = load_config(
        None, ["alarms.tachycardia.escalation_after_s=0", "alarms.tachycardia.clear_threshold=150"]
    )
    assert c.alarms.tachycardia.escalation_after_s is None and c.alarms.tachycardia.clear_threshold is None
    # a table that sets one key keeps the engine's default rule for the rest, not AlarmRule()'s
    c = load_config(None, ["alarms.bradycardia.threshold=35"])
    assert c.alarms.bradycardia == dataclasses.replace(AlarmConfig().bradycardia, threshold=35.0)
    assert c.alarms.tachycardia == AlarmConfig().tachycardia


def test_the_engine_runs_on_the_loaded_alarms():
    c = load_config(None, ["alarms.bradycardia.enabled=false", "alarms.silence_s=30"])
    engine = AlarmEngine(c.alarms, site=c.monitor.site)
    assert "bradycardia" not in engine.rules and engine.config.silence_s == 30.0


def test_embedded_defaults_are_a_broker_free_demo():
    c = load_config(None)
    assert c == load_config(DEFAULTS_FILE)
    assert not c.mqtt.enabled
    assert [d.kind for d in c.devices] == ["ecg", "eeg", "emg"]
    assert all(d.source.startswith("sim://") for d in c.devices)
    assert c.monitor.site == "demo" and c.mqtt_client_id == "vigil-demo"
    # everything the profile does not set keeps the built-in default
    assert c.alarms == Config().alarms == AlarmConfig()


def test_example_file_loads_and_documents_every_key():
    c = load_config(EXAMPLE)
    assert c.mqtt.tls_enabled and c.mqtt.host == "broker.hospital.example" and c.mqtt.port == 8883
    assert c.mqtt.password_file and c.mqtt.username
    assert [d.id for d in c.devices] == ["ecg-patch", "polar-h10", "eeg-band", "emg-sleeve"]
    assert c.alarms == AlarmConfig(), "the example shows the engine's default of every alarm key"
    data = tomllib.loads(EXAMPLE.read_text())
    assert _keys(data) == _keys(c.to_dict()), "the example file must show every key"


def test_sections_are_frozen():
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.monitor.site = "x"  # type: ignore[misc]


def test_monitor_name_and_client_id_fall_back_to_the_host_name():
    c = load_config(None, ["monitor.id="])
    assert c.monitor.id == "" and c.monitor.name
    assert c.mqtt_client_id == f"vigil-{c.monitor.name}"
    assert load_config(None, ["mqtt.client_id=gw-1"]).mqtt_client_id == "gw-1"


# ------------------------------------------------------------------------------------------------
# Errors: each names the key path, the bad value and where it came from


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("monitor.sitename=x", "monitor.sitename", "unknown key"),
        ("alarms.tachy.threshold=160", "alarms.tachy", "tachycardia"),
        ("alarms.tachycardia.threshold_bpm=160", "alarms.tachycardia.threshold_bpm", "clear_threshold"),
        ("alarms.afib.enabled=false", "alarms.afib", "irregular_rhythm"),
        ("quality.window_s=5", "quality", "unknown key"),
        ("telemetry.on=true", "telemetry", "unknown key"),
        ("mqtt.enabled=yes", "mqtt.enabled", "'yes'"),
        ("mqtt.keepalive_s=2.5", "mqtt.keepalive_s", "2.5"),
        ("monitor.tick_s=fast", "monitor.tick_s", "'fast'"),
        ("alarms.bradycardia.condition_delay_s=-1", "alarms.bradycardia.condition_delay_s", "-1"),
        ("alarms.tachycardia.escalation_after_s=-5", "alarms.tachycardia.escalation_after_s", "0 = never"),
        ("alarms.tachycardia.threshold=inf", "alarms.tachycardia.threshold", "finite"),
        ("alarms.tachycardia.threshold=nan", "alarms.tachycardia.threshold", "finite"),
        ("alarms.tachycardia.clear_threshold=nan", "alarms.tachycardia.clear_threshold", "finite"),
        ("alarms.tachycardia.clear_delay_s=4000", "alarms.tachycardia.clear_delay_s", "<= 3600"),
        ("alarms.tachycardia.latching=1", "alarms.tachycardia.latching", "true or false"),
        ("alarms.tachycardia=160", "alarms.tachycardia", "is a table"),
        ("alarms.stale_after_s=0", "alarms.stale_after_s", "> 0"),
        ("alarms.silence_s=-1", "alarms.silence_s", "> 0"),
        ("alarms.baseline_tau_s=0", "alarms.baseline_tau_s", "> 0"),
        ("alarms.baseline_learn_s=x", "alarms.baseline_learn_s", "'x'"),
        ("alarms.min_rr_for_af=0", "alarms.min_rr_for_af", ">= 1"),
        ("alarms.min_rr_for_af=12.5", "alarms.min_rr_for_af", "integer"),
        ("monitor.tick_s=0", "monitor.tick_s", "> 0"),
        ("alarms.tachycardia.threshold=35", "alarms.bradycardia.threshold", "alarms.tachycardia.threshold"),
        ("alarms.pause.threshold=5", "alarms.pause.threshold", "alarms.asystole.threshold (4 s)"),
        ("alarms.asystole.priority=urgent", "alarms.asystole.priority", "high, medium, low"),
        # clear_threshold on the side the value returns to, per the engine's direction of each limit
        ("alarms.tachycardia.clear_threshold=155", "alarms.tachycardia.clear_threshold", "<= threshold"),
        ("alarms.bradycardia.clear_threshold=35", "alarms.bradycardia.clear_threshold", ">= threshold"),
        ("alarms.bradycardia.threshold=50", "alarms.bradycardia.clear_threshold", "(50 bpm)"),
        ("alarms.battery_low.clear_threshold=10", "alarms.battery_low.clear_threshold", ">= threshold"),
        ("alarms.irregular_rhythm.clear_threshold=-1", "alarms.irregular_rhythm.clear_threshold", "<="),
        ("alarms.bradycardia.clear_threshold=150", "alarms.bradycardia.clear_threshold", "tachycardia"),
        ("alarms.tachycardia.clear_threshold=40", "alarms.tachycardia.clear_threshold", "bradycardia"),
        # thresholds within what the alarm's value can be
        ("alarms.poor_signal.threshold=1.5", "alarms.poor_signal.threshold", "<= 1 (score)"),
        ("alarms.poor_signal.clear_threshold=-0.1", "alarms.poor_signal.clear_threshold", ">= 0"),
        ("alarms.lead_off.threshold=0", "alarms.lead_off.threshold", "> 0"),
        ("alarms.battery_low.threshold=101", "alarms.battery_low.threshold", "<= 100 (%)"),
        ("alarms.seizure_model.threshold=2", "alarms.seizure_model.threshold", "probability"),
        ("alarms.bradycardia.threshold=-5", "alarms.bradycardia.threshold", "> 0 (bpm)"),
        ("mqtt.url=http://broker:1883", "mqtt.url", "mqtt://HOST"),
        ("mqtt.url=mqtt://user:secret@broker", "mqtt.url", "credentials"),
        ("mqtt.url=mqtt://broker:99999", "mqtt.url", "99999"),
        ("mqtt.url=mqtt://", "mqtt.url", "no host"),
        ("mqtt.tls.ca=/etc/ca.pem", "mqtt.url", "mqtts://"),
        ("mqtt.password_file=/etc/pw", "mqtt.username", "password_file"),
        ("mqtt.session_expiry_s=4294967296", "mqtt.session_expiry_s", "4294967296"),
        ("monitor.site=ward/3", "monitor.site", "'ward/3'"),
        ("monitor.id=gw+1", "monitor.id", "topic level"),
        ("monitor.site=", "monitor.site", "non-empty"),
        ("devices.0.id=bed#1", "devices.0.id", "'bed#1'"),
        ("devices.1.id=sim-ecg", "devices.1.id", "duplicate device id 'sim-ecg'"),
        ("devices.0.source=carrier-pigeon://x", "devices.0.source", "udp://HOST:PORT"),
        ("devices.0.source=udp://0.0.0.0", "devices.0.source", "HOST:PORT"),
        ("devices.0.kind=ekg", "devices.0.kind", "ecg, eeg, emg"),
        ("devices.0.kind=eeg", "devices.0.kind", "kind=ecg"),
        ("devices.0.channels=65", "devices.0.channels", "65"),
        ("devices.3.label=new", "devices.3.id", "required"),
        ("devices.7.id=x", "devices.7", "there are 3"),
        ("devices.x.id=x", "devices.x", "no such entry"),
        ("devices.0=x", "devices.0", "is a table"),
        ("mqtt=off", "mqtt", "is a table"),
        ("mqtt.enabled.really=true", "mqtt.enabled", "not a table"),
        ("storage.max_bytes=10", "storage.max_bytes", "10"),
        ("just-words", "just-words", "KEY=VALUE"),
    ],
)
def test_override_errors_name_the_key_and_the_override(override, key, fragment):
    err = _error([override])
    assert isinstance(err, ValueError)
    assert err.key == key
    text = str(err)
    assert text.startswith(f"{key}: ") and fragment in text
    assert f"--set {override}" in text


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[monitor]\nsitename = 'x'\n", "monitor.sitename", "[monitor] accepts site"),
        ("[mqtt]\nenabled = 'yes'\n", "mqtt.enabled", "expected true or false"),
        ("[mqtt]\nkeepalive_s = 1979-05-27\n", "mqtt.keepalive_s", "date"),
        ("monitor = 3\n", "monitor", "expected a table"),
        ("devices = {id = 'a'}\n", "devices", "expected an array"),
        ("[[devices]]\nid = 'a'\n", "devices.0.source", "required"),
        ("[[devices]]\nid = 'a'\nsource = 'udp://h:1'\nspare = 1\n", "devices.0.spare", "unknown key"),
        (
            "[[devices]]\nid = 'a'\nsource = 'udp://h:1'\n[[devices]]\nid = 'a'\nsource = 'tcp://h:2'\n",
            "devices.1.id",
            "also devices.0.id",
        ),
        ("[alarms.bradycardia]\nthreshold = 150\n", "alarms.bradycardia.threshold", "150"),
        ("[alarms.seizure]\nthreshold = 1.5\n", "alarms.seizure.clear_threshold", "<= threshold (1.5"),
        ("[alarms.pause]\nhysteresis = 1\n", "alarms.pause.hysteresis", "[alarms.pause] accepts enabled"),
        ("[alarms]\nmin_rr_for_af = 0\n", "alarms.min_rr_for_af", ">= 1"),
        ("alarms = []\n", "alarms", "expected a table"),
        ("[mqtt.tls]\ncert = 'c.pem'\n", "mqtt.tls.key", "both or neither"),
        ("[mqtt]\nurl = 'mqtts://b'\n[mqtt.tls]\nkey = 'k.pem'\n", "mqtt.tls.cert", "both or neither"),
    ],
)
def test_file_errors_name_the_key_and_the_file(tmp_path, text, key, fragment):
    err = _error(text=text, tmp_path=tmp_path)
    assert err.key == key
    assert str(err).startswith(f"{key}: ") and fragment in str(err)
    assert "vigil.toml" in err.origin


def test_unreadable_or_malformed_files(tmp_path):
    err = _error(text="[monitor\nsite = 'x'\n", tmp_path=tmp_path)
    assert "not valid TOML" in str(err) and "line 1" in str(err)
    with pytest.raises(ConfigError, match="cannot read configuration .*missing.toml"):
        load_config(tmp_path / "missing.toml")


def test_error_in_a_file_value_changed_by_an_override_blames_the_override(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text("[alarms.tachycardia]\nthreshold = 120\nclear_threshold = 110\n")
    assert load_config(path).alarms.tachycardia.threshold == 120
    err = _error(["alarms.bradycardia.threshold=130"], text=path.read_text(), tmp_path=tmp_path)
    assert err.key == "alarms.bradycardia.threshold" and "--set" in err.origin
    # the file's clear_threshold conflicts with the threshold an override set: the override is to blame
    err = _error(["alarms.tachycardia.threshold=100"], text=path.read_text(), tmp_path=tmp_path)
    assert err.key == "alarms.tachycardia.clear_threshold" and "--set" in err.origin


# ------------------------------------------------------------------------------------------------
# Overrides


def test_overrides_reach_nested_keys_and_devices():
    c = load_config(
        None,
        [
            "mqtt.enabled=true",
            "mqtt.url=mqtts://broker.example",
            "mqtt.tls.ca=/etc/vigil/ca.pem",
            "alarms.tachycardia.threshold=160",
            "alarms.asystole.priority=high",
            "alarms.bradycardia.enabled=false",
            "monitor.queue_blocks=64",
            "devices.0.label=bed 12",
            'devices.1.label="quoted, with = sign"',
            "devices.3.id=patch-9",
            "devices.3.source=udp://0.0.0.0:9000",
            "devices.3.fs=500",
            "alarms.stale_after_s=5",
            "storage.outbox_path=/var/lib/vigil/outbox",
        ],
    )
    assert c.mqtt.enabled and c.mqtt.port == 8883 and c.mqtt.tls.ca == "/etc/vigil/ca.pem"
    assert c.alarms.tachycardia.threshold == 160.0 and isinstance(c.alarms.tachycardia.threshold, float)
    assert c.alarms.asystole.priority is Priority.HIGH and c.alarms.stale_after_s == 5.0
    assert not c.alarms.bradycardia.enabled
    assert c.monitor.queue_blocks == 64
    assert c.devices[0].label == "bed 12" and c.devices[1].label == "quoted, with = sign"
    assert c.devices[3] == DeviceConfig(id="patch-9", source="udp://0.0.0.0:9000", fs=500.0)
    assert c.storage.outbox == Path("/var/lib/vigil/outbox")


def test_later_overrides_win_and_string_fields_keep_their_text():
    c = load_config(None, ["monitor.site=a", "monitor.site=b", "monitor.id=2024", "devices.0.label=true"])
    assert c.monitor.site == "b" and c.monitor.id == "2024" and c.devices[0].label == "true"
    assert load_config(None, ["monitor.site = spaced "]).monitor.site == "spaced"


def test_overrides_replace_file_values(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text("[mqtt]\nenabled = true\nkeepalive_s = 60\n")
    c = load_config(path, ["mqtt.enabled=false"])
    assert not c.mqtt.enabled and c.mqtt.keepalive_s == 60
    assert c.devices == ()  # a file replaces the demo profile, devices included


def test_the_device_list_can_be_replaced_whole():
    assert load_config(None, ["devices=[]"]).devices == ()
    c = load_config(None, ['devices=[{id = "a", source = "tcp://0.0.0.0:9100", kind = "emg"}]'])
    assert c.devices == (DeviceConfig(id="a", source="tcp://0.0.0.0:9100", kind="emg"),)
    assert _error(["devices=[{id = 'a'}]"]).key == "devices.0.source"


def test_parse_value():
    assert parse_value("160") == 160 and parse_value("1.5") == 1.5 and parse_value("false") is False
    assert parse_value('"a b"') == "a b" and parse_value("a b") == "a b" and parse_value("['x']") == ["x"]
    assert parse_value("1\nx = 2") == "1\nx = 2"  # never more than one value
    assert parse_value("160", as_string=True) == "160" and parse_value("'x'", as_string=True) == "x"


def test_apply_override_edits_plain_data():
    data: dict = {}
    assert apply_override(data, "alarms.pause.threshold=3") == "alarms.pause.threshold"
    assert apply_override(data, "alarms.silence_s=60") == "alarms.silence_s"
    assert apply_override(data, "devices.0.id=a") == "devices.0.id"
    assert data == {"alarms": {"pause": {"threshold": 3}, "silence_s": 60}, "devices": [{"id": "a"}]}


# ------------------------------------------------------------------------------------------------
# Dump -> load round trips


def _round_trip(c: Config, tmp_path: Path) -> Config:
    text = c.to_toml()
    assert tomllib.loads(text) == c.to_dict()
    path = tmp_path / "dump.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize("source", ["built-in", "embedded", "example", "odd strings"])
def test_dump_then_load_gives_the_same_config(tmp_path, source):
    c = {
        "built-in": Config,
        "embedded": lambda: load_config(None),
        "example": lambda: load_config(EXAMPLE),
        "odd strings": lambda: load_config(
            None,
            [
                'devices.0.label="tab\\t quote\\" backslash\\\\ newline\\n del\\u007f é 心"',
                "monitor.site=ünïcode-site",
                "storage.outbox_path=C:\\vigil\\outbox",
                "alarms.tachycardia.threshold=1e2",
                "alarms.tachycardia.clear_threshold=1e2",
                "alarms.irregular_rhythm.threshold=-0.1",
                "alarms.pause.escalation_after_s=0",
                "alarms.device_lost.escalation_after_s=0.5",
            ],
        ),
    }[source]()
    assert _round_trip(c, tmp_path) == c


def test_dump_shows_no_secrets():
    text = load_config(EXAMPLE).to_toml()
    assert 'password_file = "/etc/vigil/mqtt.password"' in text  # a path, never the password itself
    assert "@" not in load_config(EXAMPLE).mqtt.url


# ------------------------------------------------------------------------------------------------
# Property tests


KEY_PATHS = sorted(_keys(load_config(None).to_dict())) + [
    "devices.3.id",
    "devices.3.source",
]
VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "inf",
            "-inf",
            "nan",
            "[]",
            "['a', 1]",
            "{a = 1}",
            "1979-05-27",
            "07:32:00",
            '"',
            "'",
            "[[[[",
            "mqtt://h",
            "mqtts://h:8883",
            "udp://h:1",
            "sim://?devices=2&kind=emg",
            "1e400",
            "0x10",
            "1_000",
            "high",
            "low",
            "",
            " ",
            "\x00",
            "\ud800",
        ]  # fmt: skip
    ),
)
KEYS = st.one_of(
    st.sampled_from(KEY_PATHS),
    st.text(max_size=40),
    st.lists(st.sampled_from([*string.ascii_lowercase[:3], "devices", "mqtt", "tls", "0", "99", "-1", "",
                              "alarms", "tachycardia", "threshold", "clear_threshold", "¹"]),
             max_size=5).map(".".join),
)  # fmt: skip
OVERRIDES = st.one_of(st.text(max_size=60), st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDES, max_size=4))
def test_random_overrides_raise_only_config_error(overrides):
    try:
        c = load_config(None, overrides)
    except ConfigError as exc:
        assert exc.message and isinstance(str(exc), str)
    else:
        assert isinstance(c, Config)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEY_PATHS), VALUES), max_size=4))
def test_any_accepted_config_round_trips(tmp_path, pairs):
    try:
        c = load_config(None, [f"{k}={v}" for k, v in pairs])
    except ConfigError:
        return
    assert _round_trip(c, tmp_path) == c


# ------------------------------------------------------------------------------------------------
# The command line: vigil config show / check


def test_cli_config_show_prints_the_effective_config(capsys, tmp_path):
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert load_config(None) == config_from_dict(tomllib.loads(text))
    assert main(["config", "show", "--config", str(EXAMPLE), "--set", "alarms.tachycardia.threshold=160",
                 "--set", "alarms.silence_s=60"]) == 0  # fmt: skip
    data = tomllib.loads(capsys.readouterr().out)
    assert data["alarms"]["tachycardia"]["threshold"] == 160.0 and data["alarms"]["silence_s"] == 60.0
    assert config_from_dict(data) == load_config(
        EXAMPLE, ["alarms.tachycardia.threshold=160", "alarms.silence_s=60"]
    )


def test_cli_config_show_reports_errors(capsys):
    assert main(["config", "show", "--set", "alarms.tachycardia.threshold=nan"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "alarms.tachycardia.threshold: expected a finite number" in captured.err


def test_cli_config_check(capsys, tmp_path):
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == "ok\n"
    assert main(["config", "check", str(DEFAULTS_FILE), "--set", "alarms.pause.threshold=3"]) == 0
    assert capsys.readouterr().out == "ok\n"

    path = tmp_path / "bad.toml"
    path.write_text("[alarms.bradycardia]\nthreshold = 150\n")
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = _error(text=path.read_text(), tmp_path=tmp_path)
    assert str(err).replace("vigil.toml", "bad.toml") in captured.err
    assert "alarms.bradycardia.threshold: must be < alarms.tachycardia.threshold" in captured.err

    assert main(["config", "check", str(EXAMPLE), "--set", "alarms.poor_signal.threshold=1.5"]) == 2
    assert "alarms.poor_signal.threshold: must be >= 0 and <= 1 (score)" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read configuration" in capsys.readouterr().err
