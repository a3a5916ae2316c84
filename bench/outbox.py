"""Outbox + publisher throughput: alarms committed to SQLite and acknowledged (QoS 1) per second.

Starts its own Mosquitto on a free 127.0.0.1 port (nothing leaves loopback), subscribes to the alert
topic from a second client to check every alarm arrived, then times ``n`` schema-1 alerts from
``publish`` (or ``put_many`` batches, still committed before they are published) until the last
PUBACK. Prints PASS/FAIL against the floor and the command line that reproduces the run.

    .venv/bin/python bench/outbox.py                 # 50 alarms per commit (put_many), window 100
    .venv/bin/python bench/outbox.py --batch 1       # one commit (one fsync) per alarm
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vigil.edge.messages import AlarmState, Alert, Priority
from vigil.edge.outbox import Outbox
from vigil.edge.publisher import MQTTPublisher

FLOOR = 5000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_broker(workdir: Path, port: int, inflight: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        sys.exit("bench/outbox.py: mosquitto not found")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages {inflight}\n"
        f"log_dest file {workdir / 'mosquitto.log'}\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.01)
    proc.kill()
    sys.exit("bench/outbox.py: mosquitto did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="alarms to send")
    ap.add_argument("--batch", type=int, default=50, help="alarms per outbox commit (put_many)")
    ap.add_argument("--window", type=int, default=100, help="publisher in-flight window")
    ap.add_argument("--broker-inflight", type=int, default=100, help="mosquitto max_inflight_messages")
    ap.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    ap.add_argument("--floor", type=float, default=FLOOR)
    args = ap.parse_args()
    cmd = shlex.join([sys.executable, *sys.argv])

    alerts = [
        Alert(
            "bench",
            f"dev{i % 64}",
            "tachycardia",
            Priority.HIGH,
            AlarmState.RAISED,
            i * 1000,
            value={"hr": 150},
        )
        for i in range(args.n)
    ]
    encoded = [(a.topic, a.to_json(), a.priority, "alert") for a in alerts]

    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        work = Path(tmp)
        port = _free_port()
        broker = _start_broker(work, port, args.broker_inflight)
        # The subscriber is mosquitto_sub (C), in its own process, so it does not share our GIL.
        sub_bin = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        sub = subprocess.Popen(
            [
                sub_bin,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-i",
                "bench-sub",
                "-t",
                "vigil/bench/+/alert",
                "-C",
                str(args.n),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(sub.stdout or []), daemon=True)
        reader.start()
        time.sleep(0.3)  # subscribed before the first alarm
        outbox = Outbox(work / "outbox.db", synchronous=args.synchronous)
        pub = MQTTPublisher(outbox, "127.0.0.1", port, site="bench", monitor_id="m1", window=args.window)
        try:
            pub.start()
            if not pub.wait_connected(10):
                sys.exit("bench/outbox.py: publisher did not connect")
            time.sleep(0.2)
            t0 = time.perf_counter()
            if args.batch <= 1:
                for a in alerts:
                    pub.publish_alert(a)
            else:
                for i in range(0, args.n, args.batch):
                    pub.publish_many(encoded[i : i + args.batch])
            t_committed = time.perf_counter() - t0
            ok = pub.flush(120)
            t_acked = time.perf_counter() - t0
            reader.join(30)
            stats = pub.stats()
        finally:
            pub.stop()
            sub.kill()
            sub.wait()
            outbox.close()
            broker.terminate()
            broker.wait(10)

    received = len(lines)
    rate = args.n / t_acked
    print(
        f"alarms: {args.n}, commit batch {args.batch}, synchronous={args.synchronous}, window {stats.window}"
    )
    print(f"committed: {args.n / t_committed:,.0f}/s ({t_committed:.2f} s)")
    print(
        f"committed and acknowledged (QoS 1): {rate:,.0f}/s ({t_acked:.2f} s); received by subscriber: "
        f"{received}; acked {stats.acked}, resent {stats.resent}, dropped {stats.dropped}"
    )
    passed = ok and received >= args.n and rate >= args.floor
    print(f"{'PASS' if passed else 'FAIL'}: {rate:,.0f}/s against a floor of {args.floor:,.0f}/s")
    print(f"command: {cmd}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
