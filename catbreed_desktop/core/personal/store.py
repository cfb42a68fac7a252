"""The person's corrections, kept per model bundle: one embedding, label, photo and time per photo.

A store lives in `<data folder>/personal/<model sha256>.npz`, so another bundle (whose embeddings
mean something else) starts with an empty one. It holds the model's embedding of each corrected
photo, never its pixels, and the photo's path (for `catbreed correct --list` and the export).
Correcting a photo again replaces its entry. Writes go to a temporary file that replaces the old
one only once complete. At most `MAX_ENTRIES` are kept; the oldest go first. A file that cannot
be read is set aside as `<name>.damaged-<time>` with a one-line warning, and the store starts empty.

The window adds a correction on its GUI thread, so adding must not copy what is kept (60 MB at
20,000 entries of 768 floats): the embeddings and times live in buffers with room to spare, of
which the rows in use are a view, and the oldest entries usually go by moving where that view
starts. Rows in use are never written in place (a change to them gets new buffers), so a `copy()`
may share them with the store while another thread reads or writes it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catbreed_desktop.core import paths
from catbreed_desktop.core.errors import CatBreedError

log = logging.getLogger(__name__)

MAX_ENTRIES = 20_000
FORMAT_VERSION = 1
FOLDER = "personal"
# Spare rows a buffer gets when it is full, as a share of the rows it then needs: adding stays
# amortised O(new rows) while the buffers hold at most half as much again as the store.
HEADROOM = 0.5
MIN_CAPACITY = 64


class PersonalStoreError(CatBreedError):
    """Corrections that cannot be kept: no usable embedding, another width than the store's, no data folder."""


@dataclass(frozen=True)
class Entry:
    """One remembered correction."""

    path: str
    label: str
    time: float


def photo_key(path: str | Path) -> str:
    """The sha256 of a photo's absolute path: the same photo corrected twice keeps one entry."""
    absolute = os.path.abspath(os.fsencode(path))
    return hashlib.sha256(absolute).hexdigest()


def store_path(model_sha256: str, folder: Path | None = None) -> Path:
    return (folder or paths.data_dir() / FOLDER) / f"{model_sha256}.npz"


class PersonalStore:
    """The corrections made under one bundle, in memory, saved with `save()` (or by `add`/`forget`)."""

    def __init__(self, model_sha256: str, folder: Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.model_sha256 = model_sha256
        try:
            self.path = store_path(model_sha256, folder)
        except OSError as error:
            raise PersonalStoreError(
                f"the corrections cannot be kept: the data folder cannot be used ({error.strerror or error})"
            ) from None
        self.max_entries = max_entries
        self.warning: str | None = None  # set when a damaged file was set aside on loading
        self.labels: list[str] = []
        self.photo_paths: list[str] = []
        self.keys: list[str] = []
        # The entries' embeddings and times are rows `_first` to `_first + len(self)` of these.
        self._embedding_rows = np.zeros((0, 0), dtype=np.float32)
        self._time_rows = np.zeros(0, dtype=np.float64)
        self._first = 0
        self._load()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def embeddings(self) -> np.ndarray:
        """One row per entry, oldest first: a view, valid until the store next changes."""
        if not len(self):
            return np.zeros((0, 0), dtype=np.float32)
        return self._embedding_rows[self._first : self._first + len(self)]

    @property
    def times(self) -> np.ndarray:
        return self._time_rows[self._first : self._first + len(self)]

    def copy(self) -> PersonalStore:
        """A copy for another thread to read or save while this store goes on changing.

        It shares the rows in use, which neither changes in place; it has no spare rows, so
        adding to it makes buffers of its own. Its lists grow in place, so they are copied.
        """
        copied = copy.copy(self)
        copied._embedding_rows, copied._time_rows, copied._first = self.embeddings, self.times, 0
        copied.labels, copied.photo_paths, copied.keys = (
            list(self.labels),
            list(self.photo_paths),
            list(self.keys),
        )
        return copied

    @property
    def entries(self) -> list[Entry]:
        return [
            Entry(p, label, float(t))
            for p, label, t in zip(self.photo_paths, self.labels, self.times, strict=True)
        ]

    def add(
        self,
        photos: Sequence[str | Path],
        labels: Sequence[str],
        embeddings: np.ndarray,
        when: float | None = None,
        save: bool = True,
    ) -> None:
        """Remember each photo's label and embedding; a photo already here is replaced."""
        rows = np.asarray(embeddings, dtype=np.float32).reshape(len(photos), -1)
        if len(photos) != len(labels):
            raise ValueError(f"{len(photos)} photos but {len(labels)} labels")
        if not np.isfinite(rows).all():
            raise PersonalStoreError("the model gave no usable embedding (NaN or infinite) for a photo")
        if len(self) and rows.shape[1] != self.embeddings.shape[1]:
            raise PersonalStoreError(
                f"the embeddings are {rows.shape[1]} wide but the corrections kept are {self.embeddings.shape[1]} wide"
            )
        new_keys = [photo_key(p) for p in photos]
        self._drop(set(new_keys))
        stamp = time.time() if when is None else when
        self._append_rows(rows, np.full(len(photos), stamp, dtype=np.float64))
        self.labels += [str(label) for label in labels]
        self.photo_paths += [os.fsdecode(os.path.abspath(os.fsencode(p))) for p in photos]
        self.keys += new_keys
        self._bound()
        if save:
            self.save()

    def forget(self, photos: Sequence[str | Path] | None = None, save: bool = True) -> int:
        """Forget the given photos, or everything when None; return how many entries went.

        With `save` False only the store in memory changes, for a later `save()` (which removes
        the file of an empty store).
        """
        before = len(self)
        self._drop(set(self.keys) if photos is None else {photo_key(p) for p in photos})
        if save:
            self.save()
        return before - len(self)

    def save(self) -> None:
        if not len(self):
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(
                    stream,
                    format_version=np.array(FORMAT_VERSION),
                    model_sha256=np.array(self.model_sha256),
                    embeddings=self.embeddings,
                    labels=np.array(self.labels, dtype=str),
                    paths=np.array(self.photo_paths, dtype=str),
                    keys=np.array(self.keys, dtype=str),
                    times=self.times,
                )
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _append_rows(self, embeddings: np.ndarray, times: np.ndarray) -> None:
        """Put these rows after the ones in use (before the lists grow), in new buffers when the
        spare rows run out or the store is empty (whose next rows may be of another width)."""
        used, end = len(self), self._first + len(self)
        needed = used + len(embeddings)
        if not used or end + len(embeddings) > len(self._embedding_rows):
            capacity = max(needed + int(needed * HEADROOM), MIN_CAPACITY)
            embedding_rows = np.empty((capacity, embeddings.shape[1]), dtype=np.float32)
            time_rows = np.empty(capacity, dtype=np.float64)
            if used:
                embedding_rows[:used], time_rows[:used] = self.embeddings, self.times
            self._embedding_rows, self._time_rows, self._first, end = embedding_rows, time_rows, 0, used
        self._embedding_rows[end : end + len(embeddings)] = embeddings
        self._time_rows[end : end + len(times)] = times

    def _drop(self, keys: set[str]) -> None:
        if keys.isdisjoint(self.keys):
            return
        self._select(np.array([i for i, key in enumerate(self.keys) if key not in keys], dtype=np.int64))

    def _bound(self) -> None:
        excess = len(self) - self.max_entries
        if excess <= 0:
            return
        times = self.times
        if excess < len(self) and times[:excess].max() <= times[excess:].min():
            # The oldest are the first rows (entries come in the order they are made): the view
            # starts after them, and nothing is copied.
            self._first += excess
            del self.labels[:excess], self.photo_paths[:excess], self.keys[:excess]
            return
        # Stable: among entries of one time, the ones added first go first.
        self._select(np.sort(np.argsort(times, kind="stable")[-self.max_entries :]))

    def _select(self, rows: np.ndarray) -> None:
        self._embedding_rows = self.embeddings[rows] if len(rows) else np.zeros((0, 0), dtype=np.float32)
        self._time_rows, self._first = self.times[rows], 0
        self.labels = [self.labels[i] for i in rows]
        self.photo_paths = [self.photo_paths[i] for i in rows]
        self.keys = [self.keys[i] for i in rows]

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if (
                    int(data["format_version"]) != FORMAT_VERSION
                    or str(data["model_sha256"]) != self.model_sha256
                ):
                    raise ValueError("it belongs to another version or model")
                embeddings = np.asarray(data["embeddings"], dtype=np.float32)
                labels = [str(v) for v in data["labels"]]
                photo_paths = [str(v) for v in data["paths"]]
                keys = [str(v) for v in data["keys"]]
                times = np.asarray(data["times"], dtype=np.float64)
            count = len(labels)
            if embeddings.ndim != 2 or not (
                embeddings.shape[0] == len(photo_paths) == len(keys) == len(times) == count
            ):
                raise ValueError("its parts do not fit together")
            if not np.isfinite(embeddings).all():
                raise ValueError("it holds NaN or infinite embeddings")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            self._set_aside(error)
            return
        self._embedding_rows, self._time_rows, self._first = embeddings, times, 0
        self.labels, self.photo_paths, self.keys = labels, photo_paths, keys
        self._bound()

    def _set_aside(self, error: BaseException) -> None:
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(self.path, aside)
            where = f"kept as {aside.name}"
        except OSError:
            where = "left in place"
        self.warning = (
            f"the corrections file {self.path} could not be read ({error}); it was {where} and "
            "learning from corrections starts afresh"
        )
        log.warning("%s", self.warning)
