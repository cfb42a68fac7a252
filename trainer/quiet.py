"""Library chatter the trainer hides unless `-v`, so that its own lines are the ones people read.

Loading a pretrained backbone under a new classifier head makes transformers print a "LOAD REPORT"
table listing that head as MISSING (which is what fine-tuning means), with terminal colour codes
even into a file, after a "Loading weights" progress bar; PyTorch's ONNX exporter warns that
torchvision is not installed (no model here uses it); FutureWarnings announce API changes inside
those libraries. Errors still show, and so does everything the trainer itself prints.

The libraries read their switches when first imported, so most are environment variables, set
before the command imports them (a variable the user set is left alone); what is already imported
is told directly.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    # transformers' own progress bars follow huggingface_hub's switch.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # PyTorch resets its loggers' levels when imported; "-onnx" sets torch.onnx to errors only.
    "TORCH_LOGS": "-onnx",
}
# Warnings aimed at the developers of the code that calls these libraries, not at its users.
QUIET_WARNINGS = (FutureWarning, DeprecationWarning)


def quiet_libraries(verbose: bool) -> None:
    """Hide the libraries' load reports, progress bars and deprecation notices, unless `verbose`."""
    if verbose:
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", category=category)
    if "torch" in sys.modules:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
