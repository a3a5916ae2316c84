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

    broker = None if args.broker == "none" else args.broker
    live = False if args.plain else None
    return run_demo(
        seconds=args.seconds or None,
        speed=args.speed,
        broker=broker,
        outbox=args.outbox,
        live=live,
        overrides=args.overrides or (),
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from vigil.edge.record_view import replay_records

    seconds = None if args.seconds == 0 else args.seconds
    return replay_records(records=args.record, speed=args.speed, seconds=seconds)


def _cmd_stream(args: argparse.Namespace) -> int:
    import asyncio

    from vigil.edge.stream_view import watch
    from vigil.firmware_bridge.sources import open_source

    transport = open_source(args.source)
    seconds = None if args.seconds == 0 else args.seconds
    try:
        asyncio.run(
            watch(transport, seconds=seconds, report_s=args.every, quiet=args.quiet, blocks=args.blocks)
        )
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_devices_scan(args: argparse.Namespace) -> int:
    import asyncio

    from vigil.firmware_bridge.ble import scan

    try:
        found = asyncio.run(scan(timeout=args.timeout))
    except ImportError as exc:
        print(f"vigil devices scan: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # bleak reports a missing adapter or BlueZ D-Bus in several ways
        reason = f"{type(exc).__name__}: {exc}"
        print(f"vigil devices scan: no usable Bluetooth adapter ({reason})", file=sys.stderr)
        return 2
    for dev in found:
        print(f"{dev.address}  {dev.rssi:4d} dBm  {dev.name or '-'}  {' '.join(dev.services)}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from vigil.edge.config import load_config

    path = args.file if args.config_command == "check" else args.config
    config = load_config(path, args.overrides or ())  # a ConfigError is reported by main(), exit 2
    if args.config_command == "check":
        print("ok")
    else:
        sys.stdout.write(config.to_toml())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from vigil.edge.config import load_config
    from vigil.edge.run import run_monitor

    config = load_config(args.config, args.overrides or ())  # a ConfigError is reported by main(), exit 2
    run_monitor(config, seconds=args.seconds or None, report_s=args.every)
    return 0


def _cmd_alarms(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from vigil.edge.publisher import TLSConfig
    from vigil.edge.station import Station, watch

    url = urlsplit(args.broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise ValueError(f"--broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {args.broker!r}")
    if url.username is not None or url.password is not None:
        raise ValueError("--broker must not carry credentials; use --user and --password-file")
    tls_files = args.tls_ca or args.tls_cert or args.tls_key
    if url.scheme == "mqtt" and tls_files:
        raise ValueError("--tls-* files need an mqtts:// broker URL")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.password_file and not args.user:
        raise ValueError("--password-file needs --user")
    password = None
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
    tls = TLSConfig(args.tls_ca or "", args.tls_cert, args.tls_key) if url.scheme == "mqtts" else None
    port = url.port or (8883 if url.scheme == "mqtts" else 1883)
    command = None
    if args.ack or args.silence:
        from vigil.edge.commands import Command

        device, alarm = args.ack or args.silence
        command = Command.acknowledge(alarm) if args.ack else Command.silence(alarm, args.duration)
    elif args.duration is not None:
        raise ValueError("--duration goes with --silence")
    station = Station(
        url.hostname,
        port,
        site=args.site,
        station_id=args.station,
        username=args.user,
        password=password,
        tls=tls,
        listen=command is None,
        backoff_s=(0.5, 10.0),
    )
    with station:
        if command is not None:
            if not station.send(device, command, timeout=args.timeout):
                print(
                    f"vigil alarms: {command.action} {alarm} for {device} not sent: {station.last_error}",
                    file=sys.stderr,
                )
                return 1
            print(f"sent {command.action} {alarm} to {device} (command id {command.id})")
            return 0
        try:
            return watch(station, seconds=args.seconds or None)
        except KeyboardInterrupt:
            return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vigil.models.registry import ZOO, TrainOptions, default_data_root, network

    opts = TrainOptions(
        data=Path(args.data) if args.data else default_data_root(),
        zoo=Path(args.zoo) if args.zoo else ZOO,
        seed=args.seed,
        epochs=args.epochs,
        quick=args.quick,
        progress=sys.stderr.isatty(),
        workers=getattr(args, "workers", 1),
    )
    mod = network(args.network)
    card = mod.export(opts) if args.command == "export" else mod.train(opts)
    print(f"{card.name}: {', '.join(a.file for a in card.artifacts.values())} in {opts.zoo}")
    return 0


def _cmd_classify_beats(args: argparse.Namespace) -> int:
    from vigil.edge.beat_classes import classify_record

    return classify_record(args.record, channel=args.channel, model=args.model, precision=args.precision)


def _cmd_classify_rhythm(args: argparse.Namespace) -> int:
    from vigil.edge.rhythm_classes import classify_records

    return classify_records(args.records, model=args.model, precision=args.precision)


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

    p = sub.add_parser("stream", help="receive frames from a device source and report per-device statistics")
    p.add_argument(
        "source",
        help="udp://HOST:PORT, tcp://HOST:PORT, serial:///dev/PORT?baud=N, ble://ADDRESS, "
        "replay://RECORD?speed=X, sim://?devices=N",
    )
    p.add_argument(
        "--seconds", type=float, default=0.0, help="stop after this long; 0 = until the source ends"
    )
    p.add_argument("--every", type=float, default=5.0, help="seconds between statistics tables")
    p.add_argument("--quiet", action="store_true", help="only the statistics tables, no per-event lines")
    p.add_argument("--blocks", action="store_true", help="also print every checked, timestamped sample block")
    p.set_defaults(func=_cmd_stream)

    p = sub.add_parser("devices", help="find devices")
    dsub = p.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    q = dsub.add_parser("scan", help="list advertising BLE devices (needs the ble extra)")
    q.add_argument("--timeout", type=float, default=5.0, help="seconds to listen (default 5)")
    q.set_defaults(func=_cmd_devices_scan)

    p = sub.add_parser(
        "demo", help="the whole monitor on 12 built-in simulated and recorded wearables, live in the terminal"
    )
    p.add_argument(
        "--seconds", type=float, default=60.0, help="wall seconds to run (default 60; 0 = until Ctrl-C)"
    )
    p.add_argument("--speed", type=float, default=4.0, help="x real time (default 4)")
    p.add_argument(
        "--broker",
        default="auto",
        metavar="URL",
        help="mqtt://HOST:PORT for the alarms and vitals; 'auto' (default): mqtt://127.0.0.1:1883 when "
        "reachable; 'none': outbox only",
    )
    p.add_argument(
        "--outbox", metavar="PATH", help="outbox file (default: storage.outbox_path of the profile)"
    )
    p.add_argument(
        "--plain", action="store_true", help="plain lines, no live view (default when not a terminal)"
    )
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override a configuration key, e.g. alarms.tachycardia.threshold=130")  # fmt: skip
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "replay", help="one ECG record through the ECG kernels: rhythm every 5 s, beats scored"
    )
    p.add_argument("record", nargs="*", help="WFDB record paths (default: bundled MIT-BIH 100 and 208)")
    p.add_argument("--speed", type=float, default=20.0, help="x real time; 0 = as fast as possible")
    p.add_argument("--seconds", type=float, default=120.0, help="signal seconds per record; 0 = all")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("run", help="the monitor: configured devices -> alarms -> outbox and MQTT")
    p.add_argument("--config", metavar="FILE", help="TOML file (default: the embedded demo profile)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="override one key, e.g. mqtt.enabled=false (repeatable; later wins)",
    )
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long; 0 = until Ctrl-C")
    p.add_argument("--every", type=float, default=5.0, help="seconds between statistics lines (default 5)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "alarms", help="nurse station: live alarms of a site over MQTT; acknowledge or silence"
    )
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    p.add_argument("--site", default="local", help="site topic level (default local)")
    p.add_argument("--station", metavar="NAME", help="station name in the client id (default: host name)")
    p.add_argument("--user", help="MQTT user name (e.g. vigil-station)")
    p.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate for mqtts:// (default: system trust)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--tls-key", metavar="FILE", help="client key for mqtts://")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--ack", nargs=2, metavar=("DEVICE", "ALARM"), help="acknowledge ALARM ('*': all) and exit"
    )
    g.add_argument("--silence", nargs=2, metavar=("DEVICE", "ALARM"), help="pause ALARM's audio and exit")
    p.add_argument(
        "--duration", type=float, metavar="S", help="silence for S seconds (default: the monitor's)"
    )
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the broker to take a command"
    )
    p.add_argument("--seconds", type=float, default=0.0, help="exit after this long; 0 = until Ctrl-C")
    p.set_defaults(func=_cmd_alarms)

    from vigil.models.registry import NETWORKS

    nets = ", ".join(NETWORKS)
    actions = (
        ("train", "train a network on the real data, evaluate it, export it to the zoo"),
        ("export", "re-export a trained network (ONNX FP32 + INT8 + card) from its weights"),
    )
    for name, what in actions:
        p = sub.add_parser(name, help=what)
        p.add_argument("network", choices=list(NETWORKS), metavar="NETWORK", help=nets)
        p.add_argument("--data", metavar="DIR", help="data root (default $VIGIL_DATA or ../shared/data)")
        p.add_argument("--zoo", metavar="DIR", help="artifact folder (default models/zoo)")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--epochs", type=_positive_int, help="training epochs (default: the network's)")
        p.add_argument("--quick", action="store_true", help="a small, fast run for smoke tests")
        if name == "train":
            what = "networks trained side by side, one core each (ecg-rhythm; default 1)"
            p.add_argument("--workers", type=_positive_int, default=1, help=what)
        p.set_defaults(func=_cmd_train)

    p = sub.add_parser("classify-beats", help="beat classes of a WFDB record: 'sample_index class' per beat")
    p.add_argument("record", help="WFDB record path without extension, e.g. data/mitdb/208")
    p.add_argument("--channel", type=int, default=0, help="signal index (default 0)")
    p.add_argument("--model", metavar="PATH", help="model card or artifact (default: the shipped ecg-beats)")
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="artifact (default int8)")
    p.set_defaults(func=_cmd_classify_beats)

    p = sub.add_parser("classify-rhythm", help="rhythm of ECG strips: 'record label' (N, A, O, ~)")
    p.add_argument("records", nargs="+", help="WFDB record paths without extension")
    p.add_argument("--model", metavar="PATH", help="model card or artifact (default: the shipped ecg-rhythm)")
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="artifact (default int8)")
    p.set_defaults(func=_cmd_classify_rhythm)

    p = sub.add_parser("config", help="show or check the monitor configuration")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    set_help = "override one key, e.g. alarms.tachycardia.threshold=160 (repeatable; later wins)"
    q = csub.add_parser("show", help="print the effective configuration, every key, as TOML")
    q.add_argument("--config", metavar="FILE", help="TOML file (default: the embedded demo profile)")
    q.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help=set_help)
    q.set_defaults(func=_cmd_config)
    q = csub.add_parser("check", help="validate a configuration file: print ok, or the error and exit 2")
    q.add_argument("file", metavar="FILE", help="TOML file")
    q.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help=set_help)
    q.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
