"""The `catbreed` command line: classify, sort and undo, on top of the core."""
