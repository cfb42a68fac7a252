"""CatBreed Desktop: sort cat photos by breed on your own machine.

`core` holds everything that works without a screen (model bundles, photo decoding,
inference engines, classification and safe sorting); `cli` is the `catbreed` command
and `gui` the Qt window. The core never imports Qt.
"""

import os as _os

__version__ = "0.1.0"

# ONNX Runtime (1.2x, on Linux and macOS too) writes a device id under ~/.cache/Microsoft and keeps
# usage events to upload unless this is set before it is first imported, and "nothing leaves your
# computer" is a promise. Every entry point (window, `catbreed`, `python -m trainer`) imports this
# package first; `core.engines.onnx_runtime.import_onnxruntime` also turns the events off in a
# process that imported onnxruntime earlier. Set to 0, it leaves ONNX Runtime as it comes.
TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"
_os.environ.setdefault(TELEMETRY_VARIABLE, "1")
