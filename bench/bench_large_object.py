"""A specification file of 1 GiB through the package path vs one of 16 MiB: peak memory and time.

The project's S3 server (``python -m include.demo.services s3``) runs in its own process. For
each size an object of pseudo-random bytes (nothing compresses it away) is uploaded, then a
fresh child process does what the gather and the package do with it: the object store's stage
(multipart server-side copy + chunked SHA-256, ``object_streams``), then the package's
``package.zip``: the staged file streamed into its entry and hashed on the way, the zip uploaded
in parts as they fill (``ObjectUpload``). The child reports its peak RSS (``ru_maxrss``) and the
wall time of each step.

Ratios: peak RSS 1 GiB / 16 MiB (close to 1 means memory does not grow with the file) and the
throughput of each step. Output: a table and ``bench/results/large_object.json``.

    .venv/bin/python bench/bench_large_object.py [--large-mib 1024] [--small-mib 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUCKET = "fabconnect-bench-large"
CHILD = r"""
import hashlib, json, resource, sys, time, zipfile
from include.demo.world import s3_client_for
from include.dsr.connectors.object_streams import ObjectUpload, copy_object, sha256_of
from include.dsr.package.build import _ZipWriter

endpoint, bucket, key, expected = sys.argv[1:5]
s3 = s3_client_for(endpoint)
steps = {}
started = time.perf_counter()
copy_object(s3, bucket, key, bucket, "_staging/B1/" + key)
steps["stage_copy_s"] = time.perf_counter() - started
started = time.perf_counter()
sha256, size = sha256_of(s3, bucket, "_staging/B1/" + key)
steps["stage_sha256_s"] = time.perf_counter() - started
assert sha256 == expected, "the staged copy's hash differs from the upload's"
started = time.perf_counter()
with ObjectUpload(s3, bucket, "B1/package.zip") as upload, zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED) as z:
    writer = _ZipWriter(z)
    writer.copy("files/" + key, s3, bucket, "_staging/B1/" + key)
    writer.put("manifest.json", b"{}")
steps["package_zip_s"] = time.perf_counter() - started
assert writer.files["files/" + key]["sha256"] == expected, "the zipped file's hash differs from the upload's"
print(json.dumps({"bytes": size, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **steps}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _upload(s3, mib: int, key: str) -> str:
    """Write ``mib`` MiB of pseudo-random bytes to a temporary file, upload it; returns its SHA-256."""
    import hashlib

    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with tempfile.NamedTemporaryFile() as tmp:
        for i in range(mib):
            chunk = i.to_bytes(4, "big") + block[4:]
            digest.update(chunk)
            tmp.write(chunk)
        tmp.flush()
        s3.upload_file(tmp.name, BUCKET, key)
    return digest.hexdigest()


def _run_child(endpoint: str, key: str, sha256: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, endpoint, BUCKET, key, sha256],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode:
        raise SystemExit(f"the child failed on {key}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _baseline() -> float:
    """Peak RSS of a child that imports the same modules and does nothing (the interpreter's floor)."""
    code = (
        "import resource, boto3, zipfile; import include.dsr.package.build; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--small-mib", type=int, default=16)
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "include.demo.services", "s3"],
        env={**os.environ, "DSR_S3_PORT": str(port), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        from include.demo.readiness import wait_for_port
        from include.demo.world import s3_client_for

        wait_for_port("127.0.0.1", port, timeout=30)
        s3 = s3_client_for(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        results = {"baseline_peak_rss_mib": _baseline()}
        for label, mib in (("small", args.small_mib), ("large", args.large_mib)):
            key = f"spec-{mib}mib.step"
            sha256 = _upload(s3, mib, key)
            results[label] = {"mib": mib, **_run_child(endpoint, key, sha256)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    small, large = results["small"], results["large"]
    print(f"{'':<26}{'small':>12}{'large':>12}")
    print(f"{'object MiB':<26}{small['mib']:>12}{large['mib']:>12}")
    for name in ("peak_rss_mib", "stage_copy_s", "stage_sha256_s", "package_zip_s"):
        print(f"{name:<26}{small[name]:>12.1f}{large[name]:>12.1f}")
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    grown = large["peak_rss_mib"] - small["peak_rss_mib"]
    print(f"baseline (imports only) peak RSS: {results['baseline_peak_rss_mib']:.0f} MiB")
    print(f"peak RSS large/small: {ratio:.2f} ({grown:+.0f} MiB for {large['mib'] - small['mib']} MiB more object)")
    for name in ("stage_sha256_s", "package_zip_s"):
        print(f"{name} throughput at {large['mib']} MiB: {large['mib'] / large[name]:.0f} MiB/s")
    results["peak_rss_ratio"] = ratio
    out = ROOT / "bench" / "results" / "large_object.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
