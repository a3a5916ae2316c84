"""Open a transport from a source string, as users type it on the command line.

==================================  =============================================================
``udp://HOST:PORT``                 Vigil frames, one per datagram
``tcp://HOST:PORT``                 COBS-framed Vigil frames from many device connections
``serial:///dev/ttyACM0?baud=N``    COBS-framed Vigil frames over USB-CDC / UART
``ble://ADDRESS?profile=P``         a BLE device by address; P is ``hrs``, ``polar-ecg`` or ``vigil``
``ble://name/NAME?profile=P``       a BLE device by advertised name (found by scanning)
``replay://PATH?speed=X&loop=1``    a WFDB record or EDF/BDF file (X x real time, 0 = flat out;
                                    loop: start again at the end, as one continuous stream)
``sim://?devices=N&kind=K``         N simulated wearables (K: ecg, eeg, emg; also fs, speed, seed)
==================================  =============================================================

A malformed source raises ``ValueError`` with the accepted forms; nothing is opened until then.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .transport import Transport

FORMS = (
    "udp://HOST:PORT",
    "tcp://HOST:PORT",
    "serial:///dev/ttyACM0?baud=115200",
    "ble://ADDRESS?profile=hrs|polar-ecg|vigil",
    "ble://name/NAME?profile=...",
    "replay://PATH?speed=1",
    "sim://?devices=10&kind=ecg",
)


def _query(q: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(q, keep_blank_values=True).items()}


def _number(params: dict[str, str], key: str, default: float, kind: type = float) -> float:
    try:
        return kind(params.get(key, default))
    except ValueError:
        raise ValueError(f"{key}={params[key]!r} is not a number") from None


def _host_port(url, source: str) -> tuple[str, int]:
    try:
        port = url.port
    except ValueError:
        port = None
    if not url.hostname or port is None:
        raise ValueError(f"{source!r}: expected {url.scheme}://HOST:PORT")
    return url.hostname, port


def open_source(source: str) -> Transport:
    """The transport that ``source`` names (see the module docstring for the forms)."""
    url = urlsplit(source)
    params = _query(url.query)
    scheme = url.scheme.lower()
    if scheme == "udp":
        from .net import UDPTransport

        return UDPTransport(*_host_port(url, source))
    if scheme == "tcp":
        from .net import TCPTransport

        return TCPTransport(*_host_port(url, source))
    if scheme == "serial":
        from .serial_port import SerialTransport

        if not url.path:
            raise ValueError(f"{source!r}: expected serial:///dev/PORT")
        return SerialTransport(url.path, baudrate=int(_number(params, "baud", 115200, int)))
    if scheme == "ble":
        from .ble import BLETransport

        profile = params.get("profile", "vigil")
        if url.netloc == "name":
            name = url.path.lstrip("/")
            if not name:
                raise ValueError(f"{source!r}: expected ble://name/NAME")
            return BLETransport(profile, device_name=name)
        if not url.netloc:
            raise ValueError(f"{source!r}: expected ble://ADDRESS or ble://name/NAME")
        return BLETransport(profile, address=url.netloc)
    if scheme == "replay":
        from .replay import ReplayTransport, read_recording

        path = url.netloc + url.path
        if not path:
            raise ValueError(f"{source!r}: expected replay://PATH")
        speed = _number(params, "speed", 1.0)
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed:g}")
        loop = params.get("loop", "0").lower()
        if loop not in ("0", "1", "true", "false"):
            raise ValueError(f"loop must be 0 or 1, got {loop!r}")
        return ReplayTransport(
            read_recording(path),
            device_id=int(_number(params, "device", 1, int)),
            speed=speed,
            loop=loop in ("1", "true"),
        )
    if scheme == "sim":
        from .protocol import ChannelKind
        from .simulator import DeviceSpec, SimulatorTransport, make_devices

        kinds = {"ecg": ChannelKind.ECG, "eeg": ChannelKind.EEG, "emg": ChannelKind.EMG}
        kind = params.get("kind", "ecg").lower()
        if kind not in kinds:
            raise ValueError(f"kind must be one of {', '.join(kinds)}, got {kind!r}")
        n = int(_number(params, "devices", 10, int))
        if not 1 <= n <= 100_000:
            raise ValueError(f"devices must be in 1..100000, got {n}")
        base = DeviceSpec(kind=kinds[kind], fs=_number(params, "fs", 250.0))
        speed = _number(params, "speed", 1.0)
        return SimulatorTransport(
            make_devices(n, base, seed=int(_number(params, "seed", 0, int))), speed=speed
        )
    raise ValueError(f"unknown source {source!r}; use one of: {', '.join(FORMS)}")
