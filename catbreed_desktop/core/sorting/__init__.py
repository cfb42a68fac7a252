"""Safe sorting of photos into per-breed folders: plan, preview, execute, undo, resume, journal.

The public API the window and the command line use; see the modules for how each part works.
"""

from catbreed_desktop.core.sorting.executor import SortResult, execute_plan, resume_interrupted_sort
from catbreed_desktop.core.sorting.folder_names import (
    NOT_CAT_FOLDER,
    SPECIAL_FOLDERS,
    UNSURE_FOLDER,
    safe_folder_name,
)
from catbreed_desktop.core.sorting.journal import JournalError, JournalWriteError, last_journal, list_journals
from catbreed_desktop.core.sorting.plan import (
    COPY,
    MODES,
    MOVE,
    PlannedOperation,
    SortItem,
    SortPlan,
    plan_sort,
)
from catbreed_desktop.core.sorting.undo import (
    NothingToUndo,
    UndoPreview,
    UndoResult,
    moves_to_undo,
    plan_undo,
    undo_last_sort,
)

__all__ = [
    "COPY",
    "MODES",
    "MOVE",
    "NOT_CAT_FOLDER",
    "SPECIAL_FOLDERS",
    "UNSURE_FOLDER",
    "JournalError",
    "JournalWriteError",
    "NothingToUndo",
    "PlannedOperation",
    "SortItem",
    "SortPlan",
    "SortResult",
    "UndoPreview",
    "UndoResult",
    "execute_plan",
    "last_journal",
    "list_journals",
    "moves_to_undo",
    "plan_sort",
    "plan_undo",
    "resume_interrupted_sort",
    "safe_folder_name",
    "undo_last_sort",
]
