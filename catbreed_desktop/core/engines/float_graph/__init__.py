"""Float graphs for the GPU engines, derived from a bundle's int8 model and cached on disk."""

from catbreed_desktop.core.engines.float_graph.dequantize import (
    PRECISIONS,
    QUANTIZED_OP_TYPES,
    FloatGraphCacheError,
    UnsupportedQuantization,
    cache_files,
    dequantize_model,
    float_graph_path,
    has_quantized_ops,
    to_float16,
)

__all__ = [
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
