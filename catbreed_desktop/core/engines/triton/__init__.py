"""NVIDIA Triton Inference Server: serving a bundle, and classifying on such a server.

`contract` is what both ends (and the trainer's model repository) agree on: the model's name and
the config parameters a client checks. `server` is `catbreed serve` (pytriton, in an environment
of its own), kept from outliving its parent by `watchdog`. `client` is the "triton" engine, over
HTTP through `kserve_http` (the standard library) or over gRPC (tritonclient). The names below are
re-exported lazily: importing the package loads none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catbreed_desktop.core.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from catbreed_desktop.core.engines.triton.client import TritonEngine, TritonServerLost
    from catbreed_desktop.core.engines.triton.contract import MODEL_NAME, model_parameters
    from catbreed_desktop.core.engines.triton.server import ServeOptions, serve

__all__ = ["MODEL_NAME", "ServeOptions", "TritonEngine", "TritonServerLost", "model_parameters", "serve"]
__getattr__ = lazy_exports(__name__, __all__, ("contract", "client", "server"))
