"""`catbreed serve`: serve a model bundle on Triton Inference Server (nvidia-pytriton) until stopped.

Binds to loopback unless `--host` says otherwise; Triton has no authentication of its own, so any
other address gets a warning. Triton's HTTP server caps neither open nor idle connections: behind
a proxy that does, when many clients can reach it. Ctrl+C or SIGTERM stop the server cleanly (status 0). Needs the
`serve` extra, in an environment of its own since pytriton requires numpy < 2.

Triton's own log (some 50 lines per start, with error lines about CUDA even on a machine meant to
run on its CPU) goes to a file in the data folder, named in one line; `catbreed -v serve` shows it
on the terminal instead, with pytriton's messages.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catbreed_desktop.cli.common import PROGRAM, open_bundle
from catbreed_desktop.core.engines import create_engine
from catbreed_desktop.core.engines.names import AUTO, ENGINE_NAMES
from catbreed_desktop.core.engines.triton import server as serving
from catbreed_desktop.core.engines.triton import watchdog as serve_watchdog
from catbreed_desktop.core.engines.triton.contract import MODEL_NAME
from catbreed_desktop.core.errors import UsageError
from catbreed_desktop.core.paths import MODEL_ENV, data_dir, default_model_dir
from catbreed_desktop.core.program import positive_int

MAX_BATCH_LIMIT = 1024
# pytriton takes any TritonConfig field from PYTRITON_TRITON_CONFIG_<FIELD> where the code gives none.
TRITON_LOG_FILE_VARIABLE = "PYTRITON_TRITON_CONFIG_LOG_FILE"


def port(text: str) -> int:
    """argparse type: a TCP port from 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, not {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the model on Triton Inference Server, for `--engine triton` on other machines",
        description=(
            "Serve a model bundle on NVIDIA Triton Inference Server (through nvidia-pytriton), over HTTP "
            "and gRPC, with dynamic batching. Clients use it with `catbreed classify --engine triton "
            "--server http://HOST:PORT` or the window's Triton server setting. Stop with Ctrl+C."
        ),
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        default=None,
        help=f"model bundle folder (default: ${MODEL_ENV} or {default_model_dir()})",
    )
    parser.add_argument(
        "--host",
        default=serving.DEFAULT_HOST,
        help="address to listen on (default: 127.0.0.1, this machine only); Triton has no "
        "authentication, so expose it only on a network you trust",
    )
    parser.add_argument("--http-port", type=port, default=serving.DEFAULT_HTTP_PORT, metavar="N")
    parser.add_argument("--grpc-port", type=port, default=serving.DEFAULT_GRPC_PORT, metavar="N")
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=serving.DEFAULT_MAX_BATCH,
        metavar="N",
        help=f"most photos Triton batches into one run of the model (default: {serving.DEFAULT_MAX_BATCH})",
    )
    parser.add_argument(
        "--engine",
        choices=(AUTO, *ENGINE_NAMES),
        default=AUTO,
        help="engine that runs the model inside the server (default: auto)",
    )
    parser.add_argument("--model-name", default=MODEL_NAME, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.http_port == args.grpc_port:
        raise UsageError(f"--http-port and --grpc-port must differ (both are {args.http_port})")
    if args.max_batch > MAX_BATCH_LIMIT:
        raise UsageError(f"--max-batch must be at most {MAX_BATCH_LIMIT}, not {args.max_batch}")
    if not _is_loopback(args.host):
        print(
            f"{PROGRAM}: warning: listening on {args.host}: Triton Inference Server has no authentication "
            "of its own, so anyone who can reach this address can use the model; put it behind a firewall "
            "or an authenticating proxy",
            file=sys.stderr,
        )
    bundle = open_bundle(args)
    if not getattr(args, "verbose", False):
        _send_triton_log_to_file(data_dir() / f"triton-{args.http_port}.log")
    for folder in serve_watchdog.remove_stale_model_folders():
        print(f"{PROGRAM}: removed {folder}, left by a catbreed server that was killed", file=sys.stderr)
    engine = create_engine(bundle, args.engine, batch_size=args.max_batch)
    print(f"{PROGRAM}: serving with {engine.provider}, model {bundle.path}", file=sys.stderr)
    options = serving.ServeOptions(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        max_batch=args.max_batch,
        model_name=args.model_name,
    )

    def ready(endpoints: Mapping[str, Any]) -> None:
        watchdog.refresh()  # Triton and the model's processes are running now
        # One line on stdout, flushed: scripts and tests wait for it.
        print(f"ready: {endpoints['http']} {endpoints['grpc']} model {endpoints['model']}", flush=True)

    # Ends Triton and its model processes should this process be killed before it can stop them.
    watchdog = serve_watchdog.start_watchdog()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        serving.serve(bundle, engine, options, on_ready=ready)
    except KeyboardInterrupt:
        pass  # serve() has stopped Triton on its way out
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.close()
        watchdog.close()
    print(f"{PROGRAM}: server stopped", file=sys.stderr)
    return 0


def _send_triton_log_to_file(log: Path) -> None:
    """Triton's log into `log`, started afresh, and pytriton's notes off the terminal; says where, in one line."""
    with contextlib.suppress(FileNotFoundError):
        log.unlink()
    os.environ[TRITON_LOG_FILE_VARIABLE] = str(log)
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    print(f"{PROGRAM}: Triton's log goes to {log} (`{PROGRAM} -v serve` shows it here)", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM as Ctrl+C: pytriton stops Triton and its model processes on KeyboardInterrupt.
    raise KeyboardInterrupt


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
