"""Photos per second through `catbreed serve` (Triton) for 1, 4 and 16 concurrent clients, against the local engine.

Starts one real server (the shipped model by default) on free loopback ports from the serving
environment `tests/serve_env.py` builds, preprocesses real photos once, then each client sends
`--requests` requests of `--batch` photos through a `TritonEngine` of its own. Reported per
client count: photos/s, p50/p99 request latency, errors (must be 0); and the local ONNX Runtime
CPU engine on the same batches in the same run, with the ratio. Every loop is bounded in count
and each phase in time (`--phase-seconds`); all traffic stays on 127.0.0.1.

    .venv/bin/python bench/bench_serving.py --photos /work/shared/data/oxford-pet-cats
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from serve_env import running_server  # noqa: E402

from catbreed_desktop.core.bundle import load_bundle  # noqa: E402
from catbreed_desktop.core.engines import create_engine  # noqa: E402
from catbreed_desktop.core.engines.triton.client import TritonEngine  # noqa: E402
from catbreed_desktop.core.paths import default_model_dir  # noqa: E402
from catbreed_desktop.core.photos import iter_photo_paths, load_and_preprocess  # noqa: E402


def batches(photos: Path, bundle_path: Path, count: int, batch: int) -> list[np.ndarray]:
    bundle = load_bundle(bundle_path)
    paths = iter_photo_paths([photos], recursive=True)[: count * batch]
    arrays = [load_and_preprocess(p, bundle.preprocessing) for p in paths]
    return [np.stack(arrays[i : i + batch]) for i in range(0, len(arrays) - batch + 1, batch)]


def run_clients(
    url: str, bundle_path: Path, work: list[np.ndarray], clients: int, requests: int, limit_s: float
) -> dict[str, float]:
    bundle = load_bundle(bundle_path)
    latencies: list[float] = []
    errors = [0]
    photos = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + limit_s
    # One request per call, one call at a time per client: `clients` requests in flight in all.
    engines = [TritonEngine(bundle, url, in_flight=1, request_size=len(work[0])) for _ in range(clients)]

    def client(index: int) -> None:
        for n in range(requests):
            if time.perf_counter() > deadline:
                return
            batch = work[(index * requests + n) % len(work)]
            started = time.perf_counter()
            try:
                engines[index].run(batch)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
                photos[0] += len(batch)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(limit_s + 60)
    elapsed = time.perf_counter() - started
    for engine in engines:
        engine.close()
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "photos_s": photos[0] / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors[0],
        "requests": len(latencies),
    }


def local_rate(bundle_path: Path, work: list[np.ndarray], limit_s: float) -> float:
    bundle = load_bundle(bundle_path)
    with create_engine(bundle, "cpu") as engine:
        engine.run(work[0])  # warm-up
        done, started = 0, time.perf_counter()
        for batch in work:
            if time.perf_counter() - started > limit_s:
                break
            engine.run(batch)
            done += len(batch)
        return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="folder of real photos")
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--batch", type=int, default=8, help="photos per request")
    parser.add_argument("--requests", type=int, default=12, help="requests per client")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=32, help="the server's dynamic batching limit")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--phase-seconds", type=float, default=120.0, help="time limit of each phase")
    args = parser.parse_args()

    work = batches(args.photos, args.model, count=32, batch=args.batch)
    if not work:
        parser.error(f"no photos in {args.photos}")
    local = local_rate(args.model, work, args.phase_seconds)
    print(f"local ONNX Runtime CPU, batch {args.batch}: {local:.1f} photos/s")
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "serve.log"
        extra = ("--engine", "cpu", "--max-batch", str(args.max_batch))
        with running_server(args.model, log, *extra) as server:
            url = server.http_url if args.protocol == "http" else server.grpc_url
            print(f"server ready in {server.started_in_s:.1f} s at {url}")
            print("clients  photos/s  p50 ms  p99 ms  errors  requests  vs local")
            total_errors = 0
            for clients in args.clients:
                result = run_clients(url, args.model, work, clients, args.requests, args.phase_seconds)
                total_errors += int(result["errors"])
                print(
                    f"{clients:>7}  {result['photos_s']:>8.1f}  {result['p50_ms']:>6.0f}  {result['p99_ms']:>6.0f}  "
                    f"{result['errors']:>6}  {result['requests']:>8}  {result['photos_s'] / local:>7.2f}x"
                )
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
