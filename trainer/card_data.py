"""Model card sections about the data and the recipe: sources with their licence words, breeds,
breeds left out and why, and the command lines that made the model.

Licence words are quoted from each source's README.md rather than written here, so the card
says what the data's own documentation says; a source without a README is marked as such.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainer.card_results import table
from trainer.portable import REPO_ROOT, portable_text

README = "README.md"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_LICENCE = re.compile(r"licen[cs]", re.IGNORECASE)


def licence_words(readme: Path) -> str | None:
    """The README's sentences about its licence, joined; None when the README is missing or
    says nothing about a licence."""
    if not readme.is_file():
        return None
    # Blank lines and Markdown headings end a sentence too; a heading itself is not one.
    blocks = re.split(
        r"\n\s*\n|^#.*$", readme.read_text(encoding="utf-8", errors="replace"), flags=re.MULTILINE
    )
    found = [
        sentence
        for block in blocks
        for sentence in _SENTENCE_END.split(" ".join(block.split()))
        if _LICENCE.search(sentence)
    ]
    return " ".join(found) or None


def find_data_root(summary: Mapping, workdir: Path, data_root: Path | None = None) -> Path | None:
    """The folder the sources lie in: `data_root` when given, else the summary's (relative)
    `data_root` read against the work folder (which `prepare` wrote it against), the current
    folder and the repository."""
    if data_root is not None:
        return Path(data_root)
    recorded = summary.get("data_root")
    if not recorded:
        return None
    for base in (workdir, Path.cwd(), REPO_ROOT):
        candidate = base / recorded
        if candidate.is_dir():
            return candidate
    return None


def _sources(summary: Mapping) -> list[dict]:
    """The summary's sources as dicts; older summaries listed bare paths."""
    found = []
    for source in summary.get("sources") or []:
        if isinstance(source, Mapping):
            found.append(dict(source))
        else:
            found.append({"name": Path(str(source)).name, "path": None})
    return found


def _readme_of(root: Path | None, source: Mapping) -> Path | None:
    """A source's README: where `prepare` found its photos under `root`, else in `root`'s folder of
    the source's name (photos built elsewhere from a manifest, as the web photos are, leave their
    README in the shared data folder)."""
    if root is None:
        return None
    candidates = [root / source["path"] / README] if source.get("path") else []
    candidates.append(root / str(source["name"]) / README)
    return next((path for path in candidates if path.is_file()), candidates[0])


def data_section(
    summary: Mapping, labels: Sequence[str], root: Path | None, notes_given: bool = False
) -> list[str]:
    """Sources (licence, photos, breeds marked noisy), the breeds, and those left out and why."""
    lines = ["### Sources and licences", ""]
    for source in _sources(summary):
        readme = _readme_of(root, source)
        words = licence_words(readme) if readme is not None else None
        if words is None:
            where = (
                "its README.md was not found"
                if readme is None or not readme.is_file()
                else "its README.md names none"
            )
            words = f"licence not recorded here ({where}){'; see the notes below' if notes_given else ''}."
        line = f"- **{source['name']}**"
        if source.get("photos") is not None:
            line += f", {source['photos']} photos kept"
        line += f". Licence, in its README's words: {words}"
        if source.get("noisy_breeds"):
            line += (
                f" Its own manifest marks these breeds' labels noisy (shelter guesses): "
                f"{', '.join(source['noisy_breeds'])}."
            )
        lines.append(line)
    excluded = summary.get("excluded") or {}
    if excluded:
        lines += ["", "### Photos left out before the split", ""]
        lines += [
            f"- {source}: {count} photos, {reason}"
            for source, reasons in excluded.items()
            for reason, count in sorted(reasons.items(), key=lambda item: -item[1])
        ]
    lines += ["", f"### Breeds ({len(labels)})", "", ", ".join(labels) + "."]
    per_breed = (summary.get("cleaning") or {}).get("per_breed_and_source") or {}
    if per_breed:
        names = sorted({source for cells in per_breed.values() for source in cells})
        lines += [
            "",
            "Photos per breed and source (of them flagged by label cleaning and kept out of training):",
            "",
        ]
        lines += table(
            ["Breed", *names],
            [
                [breed]
                + [f"{cells[n]['photos']} ({cells[n]['flagged']})" if n in cells else "-" for n in names]
                for breed, cells in sorted(per_breed.items())
                if breed in labels
            ],
        )
    left_out = summary.get("left_out_breeds") or {}
    dropped = summary.get("dropped_breeds") or {}
    if left_out or dropped:
        lines += ["", "### Breeds left out", ""]
        lines += [f"- {breed}: {reason}" for breed, reason in sorted(left_out.items())]
        lines += [
            f"- {breed}: outside the {summary.get('top_breeds')} most common breeds ({count} photos)"
            for breed, count in sorted(dropped.items())
            if breed not in left_out
        ]
    return lines


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def train_command(training: Mapping, workdir_name: str = "WORKDIR") -> str:
    """The `train` command line of a training.json: recorded, or rebuilt from its settings
    (every setting is a flag of the same name; defaults are spelt out too)."""
    if training.get("command_line"):
        return str(training["command_line"])
    parts = ["python -m trainer train", workdir_name]
    for key, value in (training.get("settings") or {}).items():
        if value is None or value is False or key == "restart":
            continue
        parts.append(_flag(key) if value is True else f"{_flag(key)} {value}")
    return " ".join(parts)


def recipe_section(
    summary: Mapping,
    training: Mapping | None,
    evaluation: Mapping,
    provenance: Mapping,
    comparisons: Sequence[Mapping] = (),
    report_command: str | None = None,
) -> list[str]:
    """The command lines, in order, with absolute paths reduced to names or repository paths."""
    steps: list[tuple[str, str | None]] = [("prepare", summary.get("command_line"))]
    for key, value in summary.items():
        if isinstance(value, Mapping) and value.get("command_line"):
            steps.append((key, value["command_line"]))
    if training:
        recorded = bool(training.get("command_line"))
        label = "train" if recorded else "train (rebuilt from training.json's settings)"
        steps.append((label, train_command(training)))
    steps.append(("evaluate", evaluation.get("command_line")))
    steps.append(("export", provenance.get("command_line")))
    # Steps that changed the exported bundle afterwards, in the order they run.
    for key, name in (("head_refit", "refit-head"), ("not_a_cat_term", "non-cat-term")):
        if key in provenance:
            steps.append((name, provenance[key].get("command_line")))
    steps += [(f"compare ({c.get('title')})", c.get("command_line")) for c in comparisons]
    steps.append(("report", report_command))
    lines = ["## Recipe", ""]
    for name, command in steps:
        shown = f"`{portable_text(command)}`" if command else "not recorded"
        lines.append(f"- {name}: {shown}")
    return lines
