"""Learning from the person's corrections: a store of corrected photos' embeddings per bundle and a
layer that combines them with the bundle's probabilities. Nothing here changes a file of theirs."""

from catbreed_desktop.core.personal.combine import LayerSettings, PersonalLayer
from catbreed_desktop.core.personal.store import MAX_ENTRIES, PersonalStore, PersonalStoreError

__all__ = ["MAX_ENTRIES", "LayerSettings", "PersonalLayer", "PersonalStore", "PersonalStoreError"]
