"""What every `catbreed` subcommand shares: finding the photos, model options, opening the classifier,
progress on stderr."""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from catbreed_desktop.core import paths
from catbreed_desktop.core.bundle import (
    BUNDLE_FILE,
    DECISION,
    DEFAULT_MIN_CONFIDENCE,
    BundleError,
    ModelBundle,
    load_bundle,
)
from catbreed_desktop.core.classify import Classifier, Failure, Prediction
from catbreed_desktop.core.engines import PREFERENCES, Engine, EngineUnavailable, create_engine
from catbreed_desktop.core.engines.names import AUTO, DEFAULT_BATCH_SIZE, TRITON, Preference, as_preference
from catbreed_desktop.core.engines.triton.client import DEFAULT_TIMEOUT_S as DEFAULT_SERVER_TIMEOUT_S
from catbreed_desktop.core.errors import UsageError, error_line
from catbreed_desktop.core.personal import PersonalLayer, PersonalStore, PersonalStoreError
from catbreed_desktop.core.photos import FolderErrorCallback, iter_photo_paths, photos_in_subfolders
from catbreed_desktop.core.printable import plural, printable
from catbreed_desktop.core.program import positive_int

PROGRAM = "catbreed"


def find_photos(
    paths: Sequence[str | Path], recursive: bool, on_error: FolderErrorCallback | None = None
) -> list[Path]:
    """The photos `paths` name, as `iter_photo_paths` finds them, checked before any model loads.

    A path that does not exist, or paths without a photo, are a `UsageError`. Without `recursive`,
    photos in sub-folders are left out, while the window reads them by default: how many is said
    on stderr, with the option that includes them.
    """
    missing = [printable(path) for path in paths if not os.path.lexists(path)]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or folder")
    found = iter_photo_paths(paths, recursive=recursive, on_error=on_error)
    nested = 0 if recursive else photos_in_subfolders(paths, found)
    in_subfolders = f"{plural(nested, 'photo')} in sub-folders, which --recursive includes"
    if not found:
        places = ", ".join(printable(path) for path in paths)
        raise UsageError(f"no photos found in {places}" + (f" ({in_subfolders})" if nested else ""))
    if nested:
        print(f"{PROGRAM}: note: left out {in_subfolders}", file=sys.stderr)
    return found


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --engine, --batch-size and --gpu-precision, shared by every command that runs a model."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"model bundle folder (default: ${paths.MODEL_ENV} or {paths.default_model_dir()})",
    )
    group.add_argument(
        "--engine",
        choices=PREFERENCES,
        default=AUTO,
        help="inference engine; auto tries TensorRT, then ONNX Runtime CUDA, then CPU; triton sends the "
        "photos' pixels to the Triton server --server names (default: auto)",
    )
    group.add_argument(
        "--server",
        metavar="URL",
        default=None,
        help="the Triton Inference Server for --engine triton: http://HOST:PORT or grpc://HOST:PORT, as "
        "`catbreed serve` prints it",
    )
    group.add_argument(
        "--server-timeout",
        type=positive_seconds,
        default=DEFAULT_SERVER_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each request to the --server, from connecting to the last byte of its answer; "
        "a server that misses it ends the run as a server that stopped answering does, with nothing "
        f"moved (default: {DEFAULT_SERVER_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"photos per batch (default: {DEFAULT_BATCH_SIZE})",
    )
    group.add_argument(
        "--gpu-precision",
        choices=("fp16", "fp32"),
        default="fp16",
        help="precision of the float graph the GPU engines (TensorRT, ONNX Runtime CUDA) run; the CPU "
        "engine always runs the bundle's own graph (default: fp16)",
    )
    # Kept so scripts written for earlier versions still run; fp16 is the default now.
    group.add_argument(
        "--fp16", dest="gpu_precision", action="store_const", const="fp16", help=argparse.SUPPRESS
    )


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def confidence(text: str) -> float:
    """argparse type: a number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def add_min_confidence_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--min-confidence, whose default is the model bundle's own recommendation (`resolve_min_confidence`)."""
    parser.add_argument(
        "--min-confidence",
        type=confidence,
        default=None,
        metavar="P",
        help=f"below this probability a photo {what} (default: the threshold the model bundle recommends, "
        f"the calibrated '{DECISION}.min_confidence' its trainer chose on validation photos; "
        f"{DEFAULT_MIN_CONFIDENCE} for a bundle without one)",
    )


def resolve_min_confidence(args: argparse.Namespace, bundle: ModelBundle) -> float:
    """--min-confidence when given, else the bundle's recommendation; says on stderr which and why."""
    given = getattr(args, "min_confidence", None)
    if given is not None:
        return float(given)
    threshold = bundle.default_min_confidence
    print(
        f"{PROGRAM}: unsure below {threshold:.1%}: {bundle.min_confidence_source()} "
        "(--min-confidence P chooses another)",
        file=sys.stderr,
    )
    return threshold


def open_bundle(args: argparse.Namespace) -> ModelBundle:
    """The bundle `--model` names, else the default one; raises `UsageError` or `BundleError` saying why not."""
    explicit = getattr(args, "model", None)
    folder = Path(explicit) if explicit is not None else paths.default_model_dir()
    if explicit is None and not (folder / BUNDLE_FILE).is_file():
        raise UsageError(
            f"no default model is installed in {printable(folder)}; train and export one with "
            "`python -m trainer` (see README) or pass --model DIR"
        )
    try:
        return load_bundle(folder)
    except BundleError as error:
        raise BundleError(f"cannot use the model: {error}") from None


def uses_fp16(args: argparse.Namespace) -> bool:
    """Whether the GPU engines should run the fp16 graph (the default) rather than fp32."""
    return getattr(args, "gpu_precision", "fp16") == "fp16"


def open_classifier(args: argparse.Namespace, top_k: int = 3) -> Classifier:
    """The classifier the model options ask for; raises `BundleError` or `EngineUnavailable` saying why not."""
    preference = as_preference(getattr(args, "engine", AUTO))
    server = getattr(args, "server", None)
    if preference == TRITON and not server:
        raise UsageError("--engine triton needs --server URL (the address `catbreed serve` prints)")
    if server and preference != TRITON:
        raise UsageError(f"--server is for --engine triton, not --engine {preference}")
    bundle = open_bundle(args)
    try:
        # The Triton engine needs its server, which the classifier cannot know: it is made here.
        engine: Preference | Engine = (
            create_engine(bundle, TRITON, server=server, server_timeout=getattr(args, "server_timeout", None))
            if server
            else preference
        )
        classifier = Classifier(
            bundle,
            engine=engine,
            batch_size=getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
            top_k=top_k,
            fp16=uses_fp16(args),
        )
    except BundleError as error:
        raise BundleError(f"cannot use the model: {error}") from None
    except EngineUnavailable as error:
        where = "" if preference == TRITON else " here"
        raise EngineUnavailable(f"engine {preference!r} cannot run{where}: {error}") from None
    for note in engine_notes(classifier.fallback_notes, getattr(args, "verbose", False)):
        print(f"{PROGRAM}: note: {note}", file=sys.stderr)
    print(
        f"{PROGRAM}: using {classifier.provider} with {bundle.architecture} "
        f"({bundle.num_labels} breeds) from {printable(bundle.path)}",
        file=sys.stderr,
    )
    return classifier


def add_personal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-personal",
        action="store_true",
        help="ignore the corrections kept with `catbreed correct` or the window (used by default when there are any)",
    )


def open_personal_layer(args: argparse.Namespace, bundle: ModelBundle) -> PersonalLayer | None:
    """The layer of the person's corrections for this bundle, unless --no-personal or there are none."""
    if getattr(args, "no_personal", False):
        return None
    try:
        store = PersonalStore(bundle.model_sha256)
    except PersonalStoreError as error:  # the run goes on with the model alone
        print(f"{PROGRAM}: warning: {error_line(error)}", file=sys.stderr)
        return None
    if store.warning:
        print(f"{PROGRAM}: warning: {printable(store.warning)}", file=sys.stderr)
    if not len(store):
        return None
    layer = PersonalLayer.for_bundle(store, bundle)
    print(
        f"{PROGRAM}: adapted to {plural(len(layer), 'of your corrections', 'of your corrections')} "
        "(--no-personal ignores them)",
        file=sys.stderr,
    )
    return layer


def adapted_in_batches(
    layer: PersonalLayer, results: Iterable[Prediction | Failure], batch_size: int
) -> Iterator[Prediction | Failure]:
    """The results in order, predictions adjusted by the layer a batch at a time (one pass over the corrections each)."""
    batch: list[Prediction | Failure] = []
    for result in results:
        batch.append(result)
        if len(batch) >= batch_size:
            yield from _adapt_batch(layer, batch)
            batch = []
    yield from _adapt_batch(layer, batch)


def _adapt_batch(layer: PersonalLayer, batch: list[Prediction | Failure]) -> list[Prediction | Failure]:
    predictions = [r for r in batch if isinstance(r, Prediction)]
    adjusted = iter(layer.adapt(predictions))
    return [next(adjusted) if isinstance(r, Prediction) else r for r in batch]


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU and driver, without loading CUDA: the driver's files say."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()
    if sys.platform == "win32":
        return shutil.which("nvidia-smi") is not None
    return False  # macOS: no CUDA


def engine_notes(notes: list[str], verbose: bool) -> list[str]:
    """The notes on faster engines passed over that are worth printing.

    On a machine without a GPU they only advise installing what could never run there, so they
    are shown with -v alone; with a GPU that could not be used they say why, and are always shown.
    A frozen build cannot pip-install anything: its notes stop before such advice.
    """
    if not notes or not (verbose or gpu_present()):
        return []
    if getattr(sys, "frozen", False):
        return [_PIP_ADVICE.split(note, maxsplit=1)[0].rstrip(" ;:(") for note in notes]
    return list(notes)


# Where a note's "pip install ..." advice starts: "; pip install ...", " (install X instead: pip ...".
# A frozen build runs outside any virtual environment, so its advice starts with a bare `pip`.
_PIP_ADVICE = re.compile(r";\s*pip (?:un)?install |\s*\(install [^()]*?: pip (?:un)?install |\s*pip install ")


class ProgressReporter:
    """Progress on stderr: a self-updating line on a terminal, a single summary line otherwise.

    Pass `reporter.update` as a classifier's `on_progress` and call `finish()` at the end.
    """

    def __init__(
        self,
        noun: str = "photos",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
    ) -> None:
        self.noun = noun
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.interval = interval
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.total = 0
        self._started = clock()
        self._last_drawn = float("-inf")
        self._line_shown = False

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = self.clock()
        if self.interactive and (now - self._last_drawn >= self.interval or done >= total):
            self._last_drawn = now
            self.stream.write("\r" + self.status_line() + "\x1b[K")
            self.stream.flush()
            self._line_shown = True

    def clear(self) -> None:
        """Take the progress line off the terminal, so that other output starts on a clean line."""
        if self._line_shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._line_shown = False

    def rate(self) -> float:
        elapsed = self.clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def status_line(self) -> str:
        rate = self.rate()
        line = f"{self.done}/{self.total} {self.noun}  {rate:.1f} {self.noun}/s"
        if rate > 0 and self.total > self.done:
            line += f"  ETA {_clock_time((self.total - self.done) / rate)}"
        return line

    def finish(self, read: int | None = None) -> None:
        """The summary line: how many were done (`read`: only those read, where some could not be) and how fast."""
        elapsed = self.clock() - self._started
        count = self.done if read is None else read
        rate = count / elapsed if elapsed > 0 else 0.0
        self.clear()
        self.stream.write(f"{PROGRAM}: {count} {self.noun} in {elapsed:.1f} s ({rate:.1f} {self.noun}/s)\n")
        self.stream.flush()


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
