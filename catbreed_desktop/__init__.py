"""CatBreed Desktop: sort cat photos by breed on your own machine.

`core` holds everything that works without a screen (model bundles, photo decoding,
inference engines, classification and safe sorting); `cli` is the `catbreed` command
and `gui` the Qt window. The core never imports Qt.
"""

__version__ = "0.1.0"
