"""The project's S3 server (moto's S3 backend alone behind waitress) vs the same backend behind
werkzeug's development server (what the project ran before: a new connection per request) and
moto's all-services server, same requests.

Each server runs in its own process; a client process writes ``--puts`` small objects (a CSV of
~300 bytes, the size of a package's typical file) from 8 threads, as a wave's package stage does,
then lists ``--lists`` prefixes of 30 keys each. Prints requests per second of each, the client's
CPU milliseconds per PUT (signing, sockets: what a task process pays) and the ratios.
Output: ``results/s3_server.json``.

    .venv/bin/python bench/bench_s3_server.py [--puts 3000] [--lists 100]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SERVERS = {
    "moto_all_services": (
        "import logging, threading; logging.getLogger('werkzeug').setLevel(logging.WARNING);"
        "from moto.server import ThreadedMotoServer;"
        "ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start(); threading.Event().wait()"
    ),
    "s3_backend_on_werkzeug": (
        "import logging, threading; logging.getLogger('werkzeug').setLevel(logging.WARNING);"
        "from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app;"
        "from werkzeug.serving import make_server;"
        "make_server('127.0.0.1', {port}, create_backend_app('s3'), threaded=True,"
        " request_handler=MotoRequestHandler).serve_forever()"
    ),
    "project_s3_server": (
        "import logging, threading; logging.getLogger('waitress.queue').setLevel(logging.ERROR);"
        "from include.demo.services import S3Server; S3Server({port}).start(); threading.Event().wait()"
    ),
}

CLIENT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from include.demo.world import s3_client_for
port, puts, lists = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s3 = s3_client_for(f"http://127.0.0.1:{port}")
s3.create_bucket(Bucket="bench-s3-server")
body = b"id,email,amount_eur,charged_at\\n" + b"1,someone@example.test,129.50,2025-01-02T03:04:05+00:00\\n" * 5
def put(i):
    s3.put_object(Bucket="bench-s3-server", Key=f"req-{i // 30:05d}/csv/{i}.csv", Body=body)
put(0)
started, cpu = time.perf_counter(), time.process_time()
with ThreadPoolExecutor(8) as pool:
    list(pool.map(put, range(puts)))
put_s, put_cpu = time.perf_counter() - started, time.process_time() - cpu
started = time.perf_counter()
for i in range(lists):
    s3.list_objects_v2(Bucket="bench-s3-server", Prefix=f"req-{i:05d}/")
list_s = time.perf_counter() - started
print(json.dumps({
    "puts_per_s": round(puts / put_s, 1),
    "client_cpu_ms_per_put": round(put_cpu / puts * 1000, 2),
    "list_ms": round(list_s / lists * 1000, 2),
}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(name: str, puts: int, lists: int) -> dict:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVERS[name].format(port=port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(port), str(puts), str(lists)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--puts", type=int, default=3000)
    parser.add_argument("--lists", type=int, default=100)
    args = parser.parse_args(argv)
    report = {name: measure(name, args.puts, args.lists) for name in SERVERS}
    ours = report["project_s3_server"]
    for other in ("moto_all_services", "s3_backend_on_werkzeug"):
        report[f"ratio_puts_per_s_vs_{other}"] = round(ours["puts_per_s"] / report[other]["puts_per_s"], 2)
        report[f"ratio_client_cpu_vs_{other}"] = round(
            ours["client_cpu_ms_per_put"] / report[other]["client_cpu_ms_per_put"], 2
        )
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "s3_server.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
