"""Float graphs for the GPU engines, derived from a bundle's int8 model and cached on disk.

`dequantize` turns the int8 model back into float compute, `fp16` makes an fp16 graph of that,
`cache` derives each graph once per bundle and precision and keeps it, and `onnx_edit` holds the
graph-editing helpers the first two share.
"""

from catbreed_desktop.core.engines.float_graph.cache import (
    DERIVATION_VERSION,
    PRECISIONS,
    FloatGraphCacheError,
    cache_files,
    float_graph_path,
)
from catbreed_desktop.core.engines.float_graph.dequantize import (
    QUANTIZED_OP_TYPES,
    UnsupportedQuantization,
    dequantize_model,
    has_quantized_ops,
)
from catbreed_desktop.core.engines.float_graph.fp16 import DEFAULT_KEEP_FP32_OPS, to_float16

__all__ = [
    "DEFAULT_KEEP_FP32_OPS",
    "DERIVATION_VERSION",
    "PRECISIONS",
    "QUANTIZED_OP_TYPES",
    "FloatGraphCacheError",
    "UnsupportedQuantization",
    "cache_files",
    "dequantize_model",
    "float_graph_path",
    "has_quantized_ops",
    "to_float16",
]
