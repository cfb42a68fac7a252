"""The unsure threshold as the window shows it: its value, and where that value comes from.

The threshold is the person's own when they chose one (the slider, the settings dialog); until
then it is the loaded bundle's recommendation (`decision.min_confidence`, calibrated by the
trainer), or the old default of 0.5 for a bundle without one. `UnsureThreshold` carries the value
with that source, so every place that shows the number can also say why it is that number.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import QDoubleSpinBox

from catbreed_desktop.core.bundle import DEFAULT_MIN_CONFIDENCE, BundleError, load_bundle
from catbreed_desktop.core.settings import RANGES

# The slider moves in thousandths, so a bundle's threshold such as 0.437 is shown as it is.
SLIDER_SCALE = 1000
YOUR_SETTING = "your own setting"
NO_MODEL_YET = "the default until a model is loaded"


@dataclass(frozen=True)
class UnsureThreshold:
    value: float
    source: str  # in words: YOUR_SETTING, or what the bundle says (`ModelBundle.min_confidence_source`)

    @property
    def is_yours(self) -> bool:
        return self.source == YOUR_SETTING


def effective_threshold(chosen: float | None, recommended: UnsureThreshold) -> UnsureThreshold:
    """The person's threshold when they chose one (`chosen` is not None), else the model's recommendation."""
    return UnsureThreshold(chosen, YOUR_SETTING) if chosen is not None else recommended


def percent(value: float) -> str:
    """`value` as a percentage with a decimal only when it has one: "62%", "43.7%"."""
    text = f"{value * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def describe(threshold: UnsureThreshold, recommended: UnsureThreshold) -> str:
    """The tooltip of the threshold: what it does, its value and where that comes from.

    Rich text, so that Qt wraps the long rule a bundle may state; the texts are escaped, since
    they come from a file anyone can write.
    """
    lines = [
        "Photos whose top breed is less likely than this are marked unsure and sorted into “Unsure”.",
        f"Now {percent(threshold.value)}: {threshold.source}.",
    ]
    if threshold.is_yours:
        lines.append(
            f"The model’s own is {percent(recommended.value)}: {recommended.source}. "
            "Settings ▸ Model ▸ “Use the model’s recommendation” goes back to it."
        )
    else:
        lines.append("Moving the slider makes it your own setting, kept between runs.")
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def threshold_spin_box(value: float) -> QDoubleSpinBox:
    """A spin box over the range the settings allow, precise enough for a bundle's threshold."""
    allowed = RANGES["confidence_threshold"]
    box = QDoubleSpinBox()
    box.setRange(allowed.minimum, allowed.maximum)
    box.setSingleStep(allowed.step)
    box.setDecimals(3)
    box.setValue(value)
    return box


def no_model_threshold() -> UnsureThreshold:
    return UnsureThreshold(DEFAULT_MIN_CONFIDENCE, NO_MODEL_YET)


def bundle_threshold(folder: Path) -> UnsureThreshold:
    """What the bundle in `folder` recommends, read from its description alone, before the model loads.

    The window shows it from the start, so the slider does not jump when the model is ready; the
    checksums are verified when the model loads. A bundle that cannot be read gives the default.
    """
    try:
        bundle = load_bundle(folder, verify=False)
    except (BundleError, OSError, ValueError):
        return no_model_threshold()
    return UnsureThreshold(bundle.default_min_confidence, bundle.min_confidence_source())
