"""bench/thumbnail_gap.py: a source's test photos as they are and as thumbnails, through a bundle."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from factories import COLOUR_LABELS, import_script, make_colour_manifest

from trainer.dataset import read_manifest, write_manifest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "thumbnail_gap.py"


@pytest.fixture
def thumbnail_gap(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script imported as a module, its additions to `sys.path` and `sys.modules` undone after."""
    return import_script(SCRIPT, monkeypatch)


def test_answers_that_leave_the_source_breeds_are_counted_apart(thumbnail_gap):
    labels = ("Abyssinian", "Bengal", "Chausie")
    truth = ["Abyssinian", "Abyssinian", "Bengal", "Bengal"]
    # The second Abyssinian goes to Chausie, a breed the source lacks; Bengal comes second there.
    logits = np.array([[3.0, 0, 0], [1.0, 2.0, 3.0], [0, 3.0, 0], [0, 3.0, 1.0]])

    figures = thumbnail_gap.gap_figures(logits, labels, truth)

    assert figures["answers_outside"] == pytest.approx(0.25)
    assert figures["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    # Among the source's breeds alone the same photo is called Bengal.
    assert figures["macro_f1_source_breeds_only"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_a_model_that_reads_colour_alone_loses_nothing_to_small_photos(
    thumbnail_gap, tmp_path, colour_bundle
):
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    out = tmp_path / "gap.json"

    status = thumbnail_gap.main(
        [str(tmp_path / "work"), "--bundle", f"colour={colour_bundle.path}", "--source", "colours",
         "--sides", "40", "24", "--out", str(out)]
    )  # fmt: skip

    assert status == 0
    rows = json.loads(out.read_text())["colour"]
    assert list(rows) == ["as they are", "40", "24"]
    for row in rows.values():
        assert row == {"macro_f1": 1.0, "macro_f1_source_breeds_only": 1.0, "answers_outside": 0.0}


def test_breeds_of_keeps_only_the_photos_of_breeds_another_source_has(
    thumbnail_gap, tmp_path, colour_bundle, capsys
):
    make_colour_manifest(tmp_path / "work", tmp_path / "photos")
    samples = read_manifest(tmp_path / "work")
    # A second source that has only the first two breeds, in training alone.
    few = [s for s in samples if s.label in COLOUR_LABELS[:2] and s.split == "train"]
    write_manifest(tmp_path / "work", [*samples, *(replace(s, source="few") for s in few)])

    status = thumbnail_gap.main(
        [str(tmp_path / "work"), "--bundle", f"colour={colour_bundle.path}", "--source", "colours",
         "--breeds-of", "few", "--sides", "40"]
    )  # fmt: skip

    assert status == 0
    assert "12 test photos of colours, 2 breeds" in capsys.readouterr().out
