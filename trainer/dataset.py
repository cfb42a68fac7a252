"""`prepare`: turn breed-labelled photo collections into one clean, leak-free, split manifest.

Sources are folders with one sub-folder per breed, or CSV files with a `path,label` header (the
app exports corrections that way; a later source relabels a photo an earlier one listed). Names
go through the alias table, photos that do not decode are dropped and reported, and the N most
common breeds are kept. Exact (sha256) and near (difference-hash, Hamming distance <= 4)
duplicates are joined into groups with union-find; a group never straddles two splits, so no
photo of the test split, nor a near copy of it, is seen in training. The split is stratified per
breed and source over groups: 20% test, then 20% of the rest for validation. Each photo keeps the
name of the source it came from, and a source's MANIFEST.csv may mark breeds whose labels are
noisy (`label_quality` starting with "noisy"), so the figures can be given per source.

Outputs in WORKDIR: manifest.csv (path,label,split,group,source,flagged), labels.json, summary.json.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from catbreed_desktop.core.files import sha256_file
from catbreed_desktop.core.photos import PhotoError, iter_photo_paths, load_photo
from trainer.aliases import canonical_names, display_name, load_aliases
from trainer.errors import TrainerError
from trainer.exclusions import exclusion_reasons, load_not_cats, load_skipped_folders, record_exclusions
from trainer.progress import bar

SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.csv"
LABELS_FILE = "labels.json"
SUMMARY_FILE = "summary.json"
NEAR_DUPLICATE_DISTANCE = 4
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2  # of what the test split leaves
DEFAULT_SEED = 83


class DatasetError(TrainerError):
    """A data source or work folder that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class Sample:
    """One row of the manifest."""

    path: Path
    label: str
    split: str
    group: int
    source: str = ""  # the data source's name (its folder or CSV name), for per-source figures
    flagged: bool = False  # label cleaning: the other folds reject the given label (kept out of training)


@dataclass(frozen=True)
class _Fingerprint:
    sha256: str
    dhash: int


# ---------------------------------------------------------------------------------------- scanning


def source_name(source: str | Path) -> str:
    """The name a data source goes by in the manifest and the figures: its folder or CSV name."""
    source = Path(source)
    return source.stem if source.is_file() else source.resolve().name


def scan_sources(sources: Sequence[str | Path]) -> tuple[dict[Path, tuple[str, str]], int]:
    """{resolved photo path: (raw label, source name)} over all sources, and how many photos a
    later source relabelled (the later source then owns the photo)."""
    labelled: dict[Path, tuple[str, str]] = {}
    relabelled = 0
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = _scan_folder(source)
        elif source.is_file() and source.suffix.lower() == ".csv":
            found = _scan_csv(source)
        else:
            raise DatasetError(f"data source {source} is neither a folder of breed folders nor a .csv file")
        if not found:
            raise DatasetError(f"data source {source} holds no labelled photos")
        name = source_name(source)
        for path, label in found:
            if path in labelled and labelled[path][0] != label:
                relabelled += 1
            labelled[path] = (label, name)
    return labelled, relabelled


def noisy_breeds_of(source: str | Path) -> list[str]:
    """Raw breed names a source's MANIFEST.csv marks as noisy in its `label_quality` column.

    Collections assembled from shelter listings say which classes hold many ordinary domestic
    cats; the figures report those breeds apart, and label cleaning leans on the others.
    """
    manifest = Path(source) / "MANIFEST.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"breed", "label_quality"} <= set(reader.fieldnames):
            return []
        return sorted(
            {
                row["breed"]
                for row in reader
                if (row.get("label_quality") or "").strip().lower().startswith("noisy")
            }
        )


def data_root(sources: Sequence[str | Path]) -> Path:
    """The folder the sources share, against which they are named in summaries and bundles."""
    folders = [Path(s).resolve().parent if Path(s).is_file() else Path(s).resolve() for s in sources]
    if len(folders) == 1:
        return folders[0].parent
    return Path(os.path.commonpath(folders))


def _scan_folder(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for breed_folder in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for photo in iter_photo_paths([breed_folder], recursive=True):
            found.append((photo.resolve(), breed_folder.name))
    return found


def _scan_csv(csv_path: Path) -> list[tuple[Path, str]]:
    found = []
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path} must have a header with the columns path,label")
        for line, row in enumerate(reader, start=2):
            raw_path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not raw_path or not label:
                raise DatasetError(f"{csv_path} line {line}: both path and label are needed")
            path = Path(raw_path).expanduser()
            if not path.is_absolute():
                path = csv_path.parent / path  # relative to the CSV, so exported folders can move
            found.append((path.resolve(), label))
    return found


# ------------------------------------------------------------------------------------ fingerprints


def difference_hash(image: Image.Image, hash_size: int = 8) -> int:
    """64-bit dHash: sign of horizontal brightness steps on a 9x8 greyscale thumbnail.

    It survives resizing, recompression and small colour changes, which is what near copies of
    one photo in scraped datasets differ by.
    """
    grey = image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def _fingerprint(path: Path) -> _Fingerprint:
    image = load_photo(path)  # the app's decoder: what it cannot read, training must not use
    return _Fingerprint(sha256=sha256_file(path), dhash=difference_hash(image))


def fingerprint_photos(
    paths: Sequence[Path], workers: int = 2
) -> tuple[dict[Path, _Fingerprint], dict[Path, str]]:
    """Decode every photo (threads: Pillow releases the GIL); ({path: fingerprint}, {path: reason})."""
    good: dict[Path, _Fingerprint] = {}
    bad: dict[Path, str] = {}

    def work(path: Path) -> tuple[Path, _Fingerprint | str]:
        try:
            return path, _fingerprint(path)
        except PhotoError as error:
            return path, error.reason

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, result in bar(pool.map(work, paths), "checking photos", total=len(paths)):
            if isinstance(result, str):
                bad[path] = result
            else:
                good[path] = result
    return good, bad


# ---------------------------------------------------------------------------------- duplicate groups


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]  # path halving
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def duplicate_groups(
    fingerprints: Sequence[_Fingerprint], max_distance: int = NEAR_DUPLICATE_DISTANCE
) -> tuple[list[int], dict[str, int]]:
    """A group number per photo (photos joined by exact or near duplication share one) and counts."""
    count = len(fingerprints)
    union = _UnionFind(count)
    first_with_digest: dict[str, int] = {}
    exact_pairs = 0
    for index, fingerprint in enumerate(fingerprints):
        first = first_with_digest.setdefault(fingerprint.sha256, index)
        if first != index:
            union.union(first, index)
            exact_pairs += 1
    hashes = np.array([f.dhash for f in fingerprints], dtype=np.uint64)
    near_pairs = 0
    block = 1024  # rows at a time keeps the (block, N) distance matrix small
    for start in range(0, count, block):
        rows = hashes[start : start + block]
        distances = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        for i, j in zip(*np.nonzero(distances <= max_distance), strict=True):
            a, b = start + int(i), int(j)
            if a < b and fingerprints[a].sha256 != fingerprints[b].sha256:
                union.union(a, b)
                near_pairs += 1
    roots = [union.find(i) for i in range(count)]
    numbering = {root: number for number, root in enumerate(dict.fromkeys(roots))}
    groups = [numbering[root] for root in roots]
    sizes = Counter(groups)
    stats = {
        "exact_duplicate_pairs": exact_pairs,
        "near_duplicate_pairs": near_pairs,
        "groups_with_duplicates": sum(1 for size in sizes.values() if size > 1),
        "photos_in_duplicate_groups": sum(size for size in sizes.values() if size > 1),
    }
    return groups, stats


# ------------------------------------------------------------------------------------------- split


def split_groups(
    labels: Sequence[str],
    groups: Sequence[int],
    seed: int = DEFAULT_SEED,
    sources: Sequence[str] | None = None,
) -> dict[int, str]:
    """{group: split}, stratified per breed and source: about 20% of each (breed, source) stratum
    to test, then 20% of the rest to validation, whole groups at a time (a group counts for its
    most common breed and source).

    Stratifying by source too gives every collection its own test photos of every breed it has,
    so each source can be scored on its own; with one source this is the per-breed split.
    """
    strata_of = (
        [(label, "") for label in labels] if sources is None else list(zip(labels, sources, strict=True))
    )
    members: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for stratum, group in zip(strata_of, groups, strict=True):
        members[group].append(stratum)
    by_stratum: dict[tuple[str, str], list[int]] = defaultdict(list)
    for group, group_strata in sorted(members.items()):
        stratum = min(Counter(group_strata).items(), key=lambda item: (-item[1], item[0]))[0]
        by_stratum[stratum].append(group)

    rng = random.Random(seed)
    assignment: dict[int, str] = {}
    for stratum in sorted(by_stratum):
        stratum_groups = by_stratum[stratum]
        rng.shuffle(stratum_groups)
        total = sum(len(members[g]) for g in stratum_groups)
        test_target = round(total * TEST_FRACTION)
        val_target = round((total - test_target) * VAL_FRACTION)
        taken = {"test": 0, "val": 0}
        for group in stratum_groups:
            size = len(members[group])
            if taken["test"] < test_target:
                split = "test"
            elif taken["val"] < val_target:
                split = "val"
            else:
                split = "train"
            taken[split] = taken.get(split, 0) + size
            assignment[group] = split
    return assignment


# ---------------------------------------------------------------------------------------- prepare


def prepare(
    sources: Sequence[str | Path],
    workdir: str | Path,
    top_breeds: int = 50,
    seed: int = DEFAULT_SEED,
    aliases_file: str | Path | None = None,
    workers: int = 2,
    command_line: str | None = None,
    skipped_folders: str | Path | None = None,
    not_cats: Sequence[str | Path] = (),
) -> dict:
    """Scan, clean, deduplicate and split; write manifest.csv, labels.json and summary.json. Returns the summary.

    `skipped_folders` and `not_cats` name exclusion lists (see `trainer.exclusions`); what they
    leave out is recorded with its reason. `command_line` is recorded in the summary, so the model
    card can list the recipe's commands."""
    if top_breeds < 1:
        raise DatasetError(f"--top-breeds must be at least 1, not {top_breeds}")
    workdir = Path(workdir)
    aliases = load_aliases(aliases_file)
    raw, relabelled = scan_sources(sources)
    excluded = exclusion_reasons(
        raw,
        load_skipped_folders(skipped_folders) if skipped_folders else {},
        {path: score for screen in not_cats for path, score in load_not_cats(screen).items()},
    )
    workdir.mkdir(parents=True, exist_ok=True)
    excluded_counts = record_exclusions(workdir, raw, excluded)
    raw = {path: entry for path, entry in raw.items() if path not in excluded}
    names = canonical_names(sorted({label for label, _ in raw.values()}), aliases)
    renamed = {old: new for old, new in names.items() if old != new}

    paths = sorted(raw)
    fingerprints, unreadable = fingerprint_photos(paths, workers=workers)
    readable = [p for p in paths if p in fingerprints]
    breed_counts = Counter(names[raw[p][0]] for p in readable)
    kept_breeds = sorted(
        breed for breed, _ in sorted(breed_counts.items(), key=lambda item: (-item[1], item[0]))[:top_breeds]
    )
    if not kept_breeds:
        raise DatasetError("no readable photos in the data sources")
    kept = [p for p in readable if names[raw[p][0]] in set(kept_breeds)]
    labels = [names[raw[p][0]] for p in kept]
    origins = [raw[p][1] for p in kept]
    groups, duplicate_stats = duplicate_groups([fingerprints[p] for p in kept])
    group_split = split_groups(labels, groups, seed=seed, sources=origins)
    samples = [
        Sample(path=p, label=label, split=group_split[group], group=group, source=origin)
        for p, label, group, origin in zip(kept, labels, groups, origins, strict=True)
    ]
    conflicts = _label_conflicts(samples)

    write_manifest(workdir, samples)
    (workdir / LABELS_FILE).write_text(json.dumps(kept_breeds, indent=2) + "\n", encoding="utf-8")
    summary = {
        # Named relative to the folder they share: a bundle must not carry the build machine's paths.
        "sources": source_summaries(sources, samples, names),
        "data_root": os.path.relpath(data_root(sources), workdir.resolve()),
        "seed": seed,
        "top_breeds": top_breeds,
        "photos_found": len(paths),
        "photos_kept": len(samples),
        "relabelled_by_later_source": relabelled,
        "renamed_breeds": renamed,
        "excluded": excluded_counts,
        "unreadable": {str(p): reason for p, reason in sorted(unreadable.items())},
        "dropped_breeds": {b: n for b, n in sorted(breed_counts.items()) if b not in set(kept_breeds)},
        "duplicates": duplicate_stats | {"groups_with_conflicting_labels": conflicts},
        "counts": count_table(samples, kept_breeds),
        "command_line": command_line,
    }
    (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def source_summaries(
    sources: Sequence[str | Path], samples: Sequence[Sample], names: dict[str, str]
) -> list[dict]:
    """Per source: its name, its path relative to the data root, photos kept, breeds marked noisy."""
    root = data_root(sources)
    counts = Counter(sample.source for sample in samples)
    summaries = []
    for source in sources:
        name = source_name(source)
        noisy = sorted({names.get(raw, display_name(raw)) for raw in noisy_breeds_of(source)})
        summaries.append(
            {
                "name": name,
                "path": os.path.relpath(Path(source).resolve(), root),
                "photos": counts[name],
                "noisy_breeds": noisy,
            }
        )
    return summaries


def _label_conflicts(samples: Iterable[Sample]) -> int:
    labels_per_group: dict[int, set[str]] = defaultdict(set)
    for sample in samples:
        labels_per_group[sample.group].add(sample.label)
    return sum(1 for labels in labels_per_group.values() if len(labels) > 1)


def count_table(samples: Iterable[Sample], breeds: Sequence[str]) -> dict[str, dict[str, int]]:
    """{breed: {split: photos}} for every breed and split (zeros included)."""
    table = {breed: dict.fromkeys(SPLITS, 0) for breed in breeds}
    for sample in samples:
        table[sample.label][sample.split] += 1
    return table


def format_count_table(counts: dict[str, dict[str, int]]) -> str:
    """The per-breed, per-split counts as a plain-text table with a total row."""
    width = max([len("breed"), len("total")] + [len(b) for b in counts])
    lines = [f"{'breed':<{width}}  " + "  ".join(f"{s:>6}" for s in (*SPLITS, "all"))]
    totals = dict.fromkeys(SPLITS, 0)
    for breed, row in counts.items():
        lines.append(
            f"{breed:<{width}}  " + "  ".join(f"{row[s]:>6}" for s in SPLITS) + f"  {sum(row.values()):>6}"
        )
        for split in SPLITS:
            totals[split] += row[split]
    lines.append(
        f"{'total':<{width}}  "
        + "  ".join(f"{totals[s]:>6}" for s in SPLITS)
        + f"  {sum(totals.values()):>6}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- reading back


def write_manifest(workdir: Path, samples: Iterable[Sample]) -> None:
    with open(workdir / MANIFEST_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "group", "source", "flagged"])
        for s in samples:
            writer.writerow([str(s.path), s.label, s.split, s.group, s.source, int(s.flagged)])


def read_manifest(workdir: str | Path) -> list[Sample]:
    """The manifest `prepare` wrote, or `DatasetError` telling the user to run prepare."""
    path = Path(workdir) / MANIFEST_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path} not found; run `python -m trainer prepare --data DIR --out {workdir}` first"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            Sample(
                path=Path(row["path"]),
                label=row["label"],
                split=row["split"],
                group=int(row["group"]),
                source=row.get("source") or "",
                flagged=row.get("flagged") == "1",
            )
            for row in csv.DictReader(handle)
        ]


def read_summary(workdir: str | Path) -> dict:
    """summary.json as `prepare` (and `clean`) wrote it; empty when there is none."""
    path = Path(workdir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_labels(workdir: str | Path) -> list[str]:
    path = Path(workdir) / LABELS_FILE
    if not path.is_file():
        raise DatasetError(f"{path} not found; run `python -m trainer prepare` first")
    return json.loads(path.read_text(encoding="utf-8"))


def split_samples(samples: Iterable[Sample], split: str) -> list[Sample]:
    return [s for s in samples if s.split == split]


def subset(
    workdir: str | Path,
    out: str | Path,
    sources: Sequence[str] | None = None,
    breeds_of_source: str | None = None,
) -> dict:
    """A work folder holding part of another's photos with their splits unchanged.

    Comparison models (one source only, or only the breeds one source knows) are trained on
    exactly the photos, and scored on exactly the test photos, of the full run: the splits are
    copied, not redrawn. Returns the new folder's summary.
    """
    workdir, out = Path(workdir), Path(out)
    samples = read_manifest(workdir)
    labels = read_labels(workdir)
    known_sources = sorted({s.source for s in samples})
    for name in [*(sources or []), *([breeds_of_source] if breeds_of_source else [])]:
        if name not in known_sources:
            raise DatasetError(f"no source {name!r} in {workdir}; its sources: {', '.join(known_sources)}")
    breeds = set(labels)
    if breeds_of_source:
        breeds &= {s.label for s in samples if s.source == breeds_of_source}
    chosen = [s for s in samples if s.label in breeds and (not sources or s.source in sources)]
    kept_labels = [label for label in labels if label in {s.label for s in chosen}]
    if len(kept_labels) < 2:
        raise DatasetError("the subset holds fewer than two breeds")
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, chosen)
    (out / LABELS_FILE).write_text(json.dumps(kept_labels, indent=2) + "\n", encoding="utf-8")
    summary_path = workdir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    summary["sources"] = [
        entry for entry in summary.get("sources", []) if not sources or entry["name"] in sources
    ]
    summary["photos_kept"] = len(chosen)
    summary["counts"] = count_table(chosen, kept_labels)
    summary["subset_of"] = {
        "workdir": workdir.name,
        "sources": list(sources or known_sources),
        "breeds_of_source": breeds_of_source,
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
