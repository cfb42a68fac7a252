"""`catbreed classify`: table, JSON lines and CSV output, error lines, exit codes, model messages."""

from __future__ import annotations

import csv
import io
import json

import pytest
from factories import COLOURS, make_ood_colour_bundle, make_photo

from catbreed_desktop.cli.common import ProgressReporter
from catbreed_desktop.cli.main import build_parser, main
from catbreed_desktop.core.engines import EngineUnavailable
from catbreed_desktop.core.engines import tensorrt as tensorrt_engine


@pytest.fixture
def folder(tmp_path):
    """red.png, green.png and blue.png in one folder."""
    for name, label in (("red", "Red Cat"), ("green", "Green Cat"), ("blue", "Blue Cat")):
        make_photo(tmp_path / "photos" / f"{name}.png", COLOURS[label])
    return tmp_path / "photos"


def classify(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["classify", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_table_shows_each_photo_with_its_top_breeds(capsys, colour_bundle, folder):
    status, out, err = classify(capsys, str(folder), "--model", str(colour_bundle.path), "--engine", "cpu")

    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 3
    by_name = {line.split()[0].rsplit("/", 1)[-1]: line for line in lines}
    assert by_name["red.png"].split()[1:3] == ["Red", "Cat"]
    assert by_name["blue.png"].split()[1:3] == ["Blue", "Cat"]
    assert "%" in by_name["green.png"] and "Green Cat" in by_name["green.png"]
    assert "using ONNX Runtime CPU" in err


def test_json_lines_and_top_k(capsys, colour_bundle, folder):
    status, out, _ = classify(
        capsys, str(folder), "--model", str(colour_bundle.path), "--json", "--top-k", "2"
    )

    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [r["label"] for r in records] == ["Blue Cat", "Green Cat", "Red Cat"]  # sorted file names
    for record in records:
        assert record["ok"] and record["is_cat"] and record["ood_score"] is None
        assert len(record["top"]) == 2
        assert record["top"][0]["label"] == record["label"]
        assert record["confidence"] == record["top"][0]["probability"] > 0.9


def test_csv_has_header_and_one_row_per_photo(capsys, colour_bundle, folder):
    status, out, _ = classify(capsys, str(folder), "--model", str(colour_bundle.path), "--csv")

    rows = list(csv.DictReader(io.StringIO(out)))
    assert status == 0
    assert list(rows[0]) == [
        "path",
        "status",
        "label_1",
        "probability_1",
        "label_2",
        "probability_2",
        "label_3",
        "probability_3",
        "is_cat",
        "unsure",
        "ood_score",
        "error",
        "personal",
    ]
    assert [(r["status"], r["label_1"]) for r in rows] == [
        ("ok", "Blue Cat"),
        ("ok", "Green Cat"),
        ("ok", "Red Cat"),
    ]
    assert all(0.9 < float(r["probability_1"]) <= 1.0 for r in rows)
    assert {r["personal"] for r in rows} == {"false"}  # no corrections kept: the model alone


def test_unreadable_files_get_an_error_line_and_exit_1(capsys, colour_bundle, folder):
    broken = folder / "broken.jpg"
    broken.write_text("not a photo")
    # A path that does not exist is a usage error instead (tests/test_cli_finding_photos.py).

    status, out, err = classify(capsys, str(folder), "--model", str(colour_bundle.path))

    assert status == 1
    assert len(out.splitlines()) == 3
    assert f"error: {broken}: not an image" in err
    assert "1 of 4 files could not be classified" in err


def test_errors_are_records_in_json_and_csv(capsys, colour_bundle, folder):
    (folder / "broken.jpg").write_bytes(b"")
    status, out, _ = classify(capsys, str(folder), "--model", str(colour_bundle.path), "--json")
    failed = [json.loads(line) for line in out.splitlines() if not json.loads(line)["ok"]]
    assert status == 1
    assert failed == [{"path": str(folder / "broken.jpg"), "ok": False, "error": "the file is empty"}]

    status, out, _ = classify(capsys, str(folder), "--model", str(colour_bundle.path), "--csv")
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["status"] == "error"]
    assert status == 1 and rows[0]["error"] == "the file is empty" and rows[0]["personal"] == ""


def test_not_a_cat_is_shown(capsys, tmp_path):
    bundle = make_ood_colour_bundle(tmp_path / "ood-bundle")
    grey = make_photo(tmp_path / "grey.png", (128, 128, 128))

    status, out, _ = classify(capsys, str(grey), "--model", str(bundle.path))
    assert status == 0 and "[not a cat]" in out

    _, out, _ = classify(capsys, str(grey), "--model", str(bundle.path), "--json")
    record = json.loads(out)
    assert record["is_cat"] is False and record["ood_score"] > 1.0


def test_missing_default_model_says_how_to_get_one(capsys, tmp_path, monkeypatch, folder):
    empty = tmp_path / "no-model"
    empty.mkdir()
    monkeypatch.setenv("CATBREED_MODEL", str(empty))

    status, out, err = classify(capsys, str(folder))

    assert status == 2 and out == ""
    assert f"no default model is installed in {empty}" in err
    assert "python -m trainer" in err and "--model DIR" in err


def test_invalid_model_folder_gives_the_bundle_error(capsys, tmp_path, folder):
    status, _, err = classify(capsys, str(folder), "--model", str(tmp_path))
    assert status == 2
    assert "cannot use the model" in err and "has no bundle.json" in err


def test_unavailable_engine_asked_for_is_exit_2(capsys, colour_bundle, folder, monkeypatch):
    def no_tensorrt(*args, **kwargs):
        raise EngineUnavailable("TensorRT is not installed (test)")

    monkeypatch.setattr(tensorrt_engine, "load_toolkit", no_tensorrt)
    status, out, err = classify(
        capsys, str(folder), "--model", str(colour_bundle.path), "--engine", "tensorrt"
    )
    assert status == 2 and out == ""
    assert "engine 'tensorrt' cannot run here: TensorRT is not installed" in err


def test_usage_errors_are_exit_2(capsys, colour_bundle, tmp_path):
    assert main(["classify"]) == 2
    assert main(["classify", str(tmp_path), "--json", "--csv"]) == 2
    assert main(["classify", str(tmp_path), "--top-k", "0"]) == 2
    assert main([]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["classify", str(empty), "--model", str(colour_bundle.path)]) == 2
    assert "no photos found" in capsys.readouterr().err


def test_recursive_looks_into_subfolders(capsys, colour_bundle, tmp_path):
    make_photo(tmp_path / "top" / "a" / "b" / "deep.png", COLOURS["Red Cat"])
    assert classify(capsys, str(tmp_path / "top"), "--model", str(colour_bundle.path))[0] == 2
    status, out, _ = classify(capsys, str(tmp_path / "top"), "-r", "--model", str(colour_bundle.path))
    assert status == 0 and "deep.png" in out


def test_parser_knows_model_options():
    args = build_parser().parse_args(["classify", "x.jpg", "--engine", "cuda", "--batch-size", "4"])
    assert (args.engine, args.batch_size, args.model, args.top_k) == ("cuda", 4, None, 3)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_shows_rate_and_eta():
    now = [100.0]
    stream = FakeTerminal()
    reporter = ProgressReporter(stream=stream, clock=lambda: now[0])

    now[0] = 102.0
    reporter.update(20, 100)

    assert "20/100 photos  10.0 photos/s  ETA 0:08" in stream.getvalue()
    reporter.clear()  # before results are printed, the line is wiped so they start on a clean line
    assert stream.getvalue().endswith("\r\x1b[K")
    now[0] = 110.0
    reporter.update(100, 100)
    reporter.finish()
    assert stream.getvalue().endswith("catbreed: 100 photos in 10.0 s (10.0 photos/s)\n")


def test_progress_off_a_terminal_prints_only_the_summary():
    now = [0.0]
    stream = io.StringIO()
    reporter = ProgressReporter(stream=stream, clock=lambda: now[0])
    for done in (0, 8, 16):
        now[0] += 1.0
        reporter.update(done, 16)
    reporter.finish()
    assert stream.getvalue() == "catbreed: 16 photos in 3.0 s (5.3 photos/s)\n"
