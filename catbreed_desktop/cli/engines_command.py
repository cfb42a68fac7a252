"""`catbreed engines`: every inference engine, whether it can run here, on which graph, with which providers.

A table by default, one JSON object with `--json`. The listing starts nothing slow (see
`core.engines.inventory`); `--check` starts each available engine (or the one `--engine` names),
which may derive a float graph (seconds) and build a TensorRT engine (minutes, once), and runs
one batch through it. `--server URL` adds the Triton Inference Server there (reached, its model
checked against the bundle). The exit status is 0 whatever the engines can do: an engine that cannot
run is a result, not an error. 2 means the model itself cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from catbreed_desktop.cli.common import add_model_options, open_bundle, uses_fp16
from catbreed_desktop.core.bundle import ModelBundle
from catbreed_desktop.core.engines.inventory import EngineInfo, first_available, list_engines
from catbreed_desktop.core.engines.names import AUTO, ENGINE_NAMES, TRITON
from catbreed_desktop.core.errors import UsageError
from catbreed_desktop.core.printable import printable


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "engines",
        help="list the inference engines: available or why not, graph, precision, providers",
        description=(
            "List TensorRT, TensorRT for RTX, ONNX Runtime CUDA, ONNX Runtime CPU and OpenVINO CPU: whether each can run here (or why "
            "not), the graph file and precision it runs, and the execution providers really active. "
            "--gpu-precision and --batch-size are the settings TensorRT would be built with."
        ),
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument(
        "--check",
        action="store_true",
        help="start each available engine (only the one --engine names, unless auto) and run one batch: "
        "reports the providers really active, where nodes ran and whether outputs are finite; may derive "
        "float graphs (seconds) and build the TensorRT engine (minutes, once)",
    )
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    engine = getattr(args, "engine", AUTO)
    server = getattr(args, "server", None)
    if engine == TRITON and not server:
        raise UsageError("--engine triton needs --server URL (the address `catbreed serve` prints)")
    bundle = open_bundle(args)
    names = (*ENGINE_NAMES, TRITON) if server else ENGINE_NAMES
    check = (names if engine == AUTO else (engine,)) if args.check else ()
    infos = list_engines(
        bundle,
        fp16=uses_fp16(args),
        batch_size=args.batch_size,
        check=check,
        server=server,
        server_timeout=getattr(args, "server_timeout", None),
    )
    if args.json:
        json.dump(listing_json(bundle, infos), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_table(bundle, infos, sys.stdout)
    return 0


def listing_json(bundle: ModelBundle, infos: list[EngineInfo]) -> dict[str, Any]:
    """The `--json` document: the model, the engine auto mode would try first, and every engine."""
    first = first_available(infos)
    return {
        "model": str(bundle.path),
        "architecture": bundle.architecture,
        "auto": first.name if first else None,
        "engines": [info.to_json() for info in infos],
    }


def _graph_text(info: EngineInfo) -> str:
    text = printable(info.graph)
    return text if info.graph_ready else f"{text} (not derived yet)"


def write_table(bundle: ModelBundle, infos: list[EngineInfo], out: TextIO) -> None:
    """One row per engine, then indented lines: why not, GPU, first-start work, check result, notes."""
    rows = [
        (
            info.title,
            "yes" if info.available else "no",
            info.precision,
            ",".join(info.providers) if info.started else "not started",
            _graph_text(info),
        )
        for info in infos
    ]
    header = ("ENGINE", "AVAILABLE", "PRECISION", "PROVIDERS", "GRAPH")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        return (
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=False))
            + "  "
            + cells[-1]
        )

    out.write(f"model: {printable(bundle.path)} ({bundle.architecture})\n")
    out.write(line(header).rstrip() + "\n")
    for info, row in zip(infos, rows, strict=True):
        out.write(line(row).rstrip() + "\n")
        details = [("why not", info.reason), ("gpu", info.gpu), ("first start", info.first_start)]
        details += [("check", info.checked)] + [("note", note) for note in info.notes]
        for label, text in details:
            if text:
                out.write(f"    {label}: {printable(text)}\n")
    first = first_available(infos)
    out.write(f"auto tries first: {first.title if first else 'nothing: no engine can run here'}\n")
