"""The library core: model bundles, photo decoding, inference engines, classification and sorting.

Nothing in this package imports Qt, so the command line, the trainer and the window all share it.
Its subsystems are packages: `photos/`, `engines/` (with `float_graph/` and `triton/`), `sorting/`.
"""
