"""The settings dialog: which model bundle (with its breeds and metrics), engine, batch size, thumbnails.

It edits a copy of the settings; the window applies them (reloading the model when needed).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from catbreed_desktop.core.bundle import BundleError, load_bundle
from catbreed_desktop.core.paths import default_model_dir
from catbreed_desktop.core.settings import ENGINE_CHOICES, Settings

ENGINE_NAMES = {"auto": "Automatic (fastest available)", "tensorrt": "TensorRT", "cuda": "CUDA", "cpu": "CPU"}


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(640, 520)
        self._settings = copy.deepcopy(settings)

        self.model_edit = QLineEdit(settings.model_path)
        self.model_edit.setPlaceholderText(f"Default: {default_model_dir()}")
        browse = QPushButton("Open bundle…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)
        self.bundle_info = QPlainTextEdit()
        self.bundle_info.setReadOnly(True)

        self.engine_box = QComboBox()
        for engine in ENGINE_CHOICES:
            self.engine_box.addItem(ENGINE_NAMES[engine], engine)
        self.engine_box.setCurrentIndex(ENGINE_CHOICES.index(settings.engine))
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(settings.batch_size)
        self.thumbnail_spin = QSpinBox()
        self.thumbnail_spin.setRange(64, 512)
        self.thumbnail_spin.setSingleStep(16)
        self.thumbnail_spin.setSuffix(" px")
        self.thumbnail_spin.setValue(settings.thumbnail_size)

        form = QFormLayout()
        form.addRow("Model bundle:", model_row)
        form.addRow("Breeds and metrics:", self.bundle_info)
        form.addRow("Engine:", self.engine_box)
        form.addRow("Batch size:", self.batch_spin)
        form.addRow("Thumbnail size:", self.thumbnail_spin)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.model_edit.editingFinished.connect(self.show_bundle_info)
        self.show_bundle_info()

    def settings(self) -> Settings:
        """The settings as edited in the dialog."""
        result = copy.deepcopy(self._settings)
        result.model_path = self.model_edit.text().strip()
        result.engine = self.engine_box.currentData()
        result.batch_size = self.batch_spin.value()
        result.thumbnail_size = self.thumbnail_spin.value()
        return result

    def show_bundle_info(self) -> None:
        folder = Path(self.model_edit.text().strip() or default_model_dir())
        try:
            # The checksum is verified when the model loads; here only the description is read.
            bundle = load_bundle(folder, verify=False)
        except BundleError as error:
            self.bundle_info.setPlainText(f"{error}")
            return
        lines = [
            f"Folder: {bundle.path}",
            f"Architecture: {bundle.architecture}",
            f"{bundle.num_labels} breeds: {', '.join(bundle.labels)}",
            "",
            "Metrics:",
            json.dumps(bundle.metrics, indent=2, sort_keys=True) if bundle.metrics else "(none recorded)",
        ]
        if bundle.provenance:
            lines += ["", "Provenance:", json.dumps(bundle.provenance, indent=2, sort_keys=True)]
        self.bundle_info.setPlainText("\n".join(lines))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open model bundle", self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)
            self.show_bundle_info()
