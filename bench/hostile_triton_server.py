"""The hostile-server audit of the Triton client, at the audit's sizes: every case must end in words.

Runs the fake KServe server of tests/test_hostile_triton_client.py with its huge replies raised to
8 GiB, and for each case reports what the client said, how long it took and this process's peak
resident memory (VmHWM) after it; then `catbreed sort` against a server that drips one byte a
second, which must stop at `--server-timeout` with nothing moved. Exit status 1 when any case
fails. All traffic stays on 127.0.0.1; it takes about a minute.

    .venv/bin/python bench/hostile_triton_server.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_hostile_triton_client as hostile  # noqa: E402
from factories import make_colour_bundle  # noqa: E402

from catbreed_desktop.cli.main import main  # noqa: E402
from catbreed_desktop.core.bundle import LOGITS_NAME  # noqa: E402
from catbreed_desktop.core.engines.triton.contract import MODEL_NAME  # noqa: E402
from catbreed_desktop.core.engines.triton.kserve_http import KServeError  # noqa: E402


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def drip_one_byte_a_second(sock) -> None:
    with contextlib.suppress(OSError):
        for byte in hostile.http_reply(200, b"{}" + b" " * 10_000):
            sock.sendall(bytes([byte]))
            time.sleep(1.0)


def main_() -> int:
    hostile.HUGE_CHUNKS = 8 * hostile.GiB // 65536
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        bundle = make_colour_bundle(Path(scratch) / "bundle")
        server = hostile.HostileServer(bundle)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        location = server.url.removeprefix("http://")
        limit = hostile.reply_limit(8, bundle.num_labels)
        cases = [
            ("config", "8 GiB announced", hostile.announce_huge),
            ("config", "8 GiB chunked, no length", hostile.stream_huge),
            ("infer", "8 GiB announced", hostile.announce_huge),
            ("infer", "8 GiB chunked, no length", hostile.stream_huge),
            ("config", "slow drip (0.1 s a byte)", hostile.slow_drip),
            ("config", "length says more, then silence", hostile.length_says_more_and_stalls),
            ("config", "length says more, then closes", hostile.length_says_more_and_closes),
            ("config", "garbage bytes", hostile.garbage),
            ("config", "JSON nested 100,000 deep", hostile.nested_json),
        ]
        print(f"{'call':7} {'case':34} {'s':>6} {'peak MiB':>9}  outcome")
        for call, name, behaviour in cases:
            server.hostile = {call: behaviour}
            client = hostile.KServeHttpClient(location, network_timeout=2.0)
            started = time.monotonic()
            try:
                if call == "config":
                    client.get_model_config(MODEL_NAME)
                else:
                    client.infer(MODEL_NAME, hostile.pixels(8), [LOGITS_NAME], reply_limit=limit)
                outcome, ok = "accepted (should not be)", False
            except (KServeError, OSError, Exception) as error:  # noqa: BLE001 - any error in words is the point
                outcome, ok = f"{type(error).__name__}: {error}"[:90], True
            client.close()
            failures += not ok
            print(f"{call:7} {name:34} {time.monotonic() - started:6.2f} {peak_mib():9.0f}  {outcome}")

        inbox = Path(scratch) / "inbox"
        before = hostile._inbox(inbox)
        server.hostile = {"infer": drip_one_byte_a_second}
        err = io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stderr(err):
            status = main(
                ["sort", str(inbox), "--into", str(Path(scratch) / "sorted"), "--model", str(bundle.path),
                 "--engine", "triton", "--server", server.url, "--server-timeout", "2"]
            )  # fmt: skip
        elapsed = time.monotonic() - started
        unchanged = {p.name: p.read_bytes() for p in inbox.iterdir()} == before
        ok = status == 2 and unchanged and "nothing was moved" in err.getvalue()
        failures += not ok
        last = err.getvalue().strip().splitlines()[-1]
        print(f"sort against 1 byte/s, --server-timeout 2: status {status}, {elapsed:.1f} s, inbox unchanged "
              f"{unchanged}: {last[:120]}")  # fmt: skip
        server.shutdown()
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main_())
