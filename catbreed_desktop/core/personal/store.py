"""The person's corrections, kept per model bundle: one embedding, label, photo and time per photo.

A store lives in `<data folder>/personal/<model sha256>.npz`, so another bundle (whose embeddings
mean something else) starts with an empty one. It holds the model's embedding of each corrected
photo, never its pixels, and the photo's path (for `catbreed correct --list` and the export).
Correcting a photo again replaces its entry. Writes go to a temporary file that replaces the old
one only once complete. At most `MAX_ENTRIES` are kept; the oldest go first. A file that cannot
be read is set aside as `<name>.damaged-<time>` with a one-line warning, and the store starts empty.
"""

from __future__ import annotations

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
        self.embeddings = np.zeros((0, 0), dtype=np.float32)
        self.labels: list[str] = []
        self.photo_paths: list[str] = []
        self.keys: list[str] = []
        self.times = np.zeros(0, dtype=np.float64)
        self._load()

    def __len__(self) -> int:
        return len(self.labels)

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
        self.embeddings = rows if not len(self) else np.concatenate([self.embeddings, rows])
        self.labels += [str(label) for label in labels]
        self.photo_paths += [os.fsdecode(os.path.abspath(os.fsencode(p))) for p in photos]
        self.keys += new_keys
        self.times = np.concatenate([self.times, np.full(len(photos), stamp, dtype=np.float64)])
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

    def _drop(self, keys: set[str]) -> None:
        keep = [i for i, key in enumerate(self.keys) if key not in keys]
        if len(keep) != len(self.keys):
            self._select(np.array(keep, dtype=np.int64))

    def _bound(self) -> None:
        if len(self) > self.max_entries:
            # Stable: among entries of one time, the ones added first go first.
            newest = np.sort(np.argsort(self.times, kind="stable")[-self.max_entries :])
            self._select(newest)

    def _select(self, rows: np.ndarray) -> None:
        self.embeddings = self.embeddings[rows] if len(rows) else np.zeros((0, 0), dtype=np.float32)
        self.labels = [self.labels[i] for i in rows]
        self.photo_paths = [self.photo_paths[i] for i in rows]
        self.keys = [self.keys[i] for i in rows]
        self.times = self.times[rows]

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
        self.embeddings, self.labels, self.photo_paths, self.keys, self.times = (
            embeddings,
            labels,
            photo_paths,
            keys,
            times,
        )
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
