"""Models: build a Hugging Face image classifier, save and load checkpoints, run it over photos.

A checkpoint folder is what `save_pretrained` writes plus `preprocessing.json` (the shared
`Preprocessing` the model was trained with) and `trainer.json` (base model, labels). The
`embedding` of a photo is the pooled feature the classification head sees (ViT: the CLS token;
DINOv2: CLS next to the mean patch token); `LogitsAndEmbedding` returns both, for export and
for the out-of-distribution detector.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from catbreed_desktop.core.photos import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, load_and_preprocess
from trainer.errors import TrainerError
from trainer.progress import bar

PREPROCESSING_FILE = "preprocessing.json"
TRAINER_FILE = "trainer.json"
TRAINING_FILE = "training.json"  # the settings of the run that saved a best checkpoint
PRESETS = ("tiny",)
TINY_IMAGE_SIZE = 32


class ModelError(TrainerError):
    """A base model or checkpoint that cannot be used, with the reason in words."""


def preprocessing_for(base_model: str | None, preset: str | None, image_size: int) -> Preprocessing:
    """The preprocessing training uses: the base model's mean/std, the shorter side at size*256/224."""
    if preset == "tiny":
        return Preprocessing(size=TINY_IMAGE_SIZE, resize=round(TINY_IMAGE_SIZE * 256 / 224))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    local = Path(base_model) if base_model else None
    if local is not None and (local / PREPROCESSING_FILE).is_file():
        saved = Preprocessing.from_dict(json.loads((local / PREPROCESSING_FILE).read_text(encoding="utf-8")))
        mean, std = saved.mean, saved.std
    elif base_model:
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(base_model)
            mean = tuple(processor.image_mean)
            std = tuple(processor.image_std)
        except (OSError, ValueError, AttributeError, TypeError, ImportError):
            pass  # no processor config: ImageNet statistics, which nearly all ViTs use
    return Preprocessing(size=image_size, resize=round(image_size * 256 / 224), mean=mean, std=std)


def build_model(
    labels: Sequence[str],
    base_model: str | None = None,
    preset: str | None = None,
    seed: int = 83,
) -> nn.Module:
    """A classifier for `labels`: a fresh tiny ViT (`preset="tiny"`) or a pretrained base with a new head."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    torch.manual_seed(seed)  # the new head (and a preset's whole model) starts the same every run
    if preset == "tiny":
        config = ViTConfig(
            image_size=TINY_IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            id2label=id2label,  # sets num_labels too
            label2id=label2id,
        )
        return ViTForImageClassification(config)
    if preset is not None:
        raise ModelError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if not base_model:
        raise ModelError(
            "give --base-model (a Hugging Face id or a local checkpoint folder) or --preset tiny"
        )
    _check_head_order(base_model, labels)
    try:
        return AutoModelForImageClassification.from_pretrained(
            base_model,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load base model {base_model!r}: {error}") from None


def _check_head_order(base_model: str, labels: Sequence[str]) -> None:
    """A base checkpoint with a head for as many breeds keeps that head (`checkpoint-from-bundle`
    relies on it), so its breeds must be these breeds in this order, or every answer would go to
    the wrong breed; a head of another size is replaced and needs no check."""
    config_file = Path(base_model) / "config.json"
    if not config_file.is_file():
        return
    named = json.loads(config_file.read_text()).get("id2label") or {}
    kept = [named[key] for key in sorted(named, key=int)]
    if (
        len(kept) == len(labels)
        and kept != list(labels)
        and not all(k == f"LABEL_{i}" for i, k in enumerate(kept))
    ):
        raise ModelError(
            f"the base model {base_model} has a head for {len(kept)} breeds that are not this work "
            "folder's breeds in its order; train from a checkpoint made for this work folder, or from "
            "the pretrained backbone"
        )


def encoder_parts(model: nn.Module) -> tuple[nn.Module, Sequence[nn.Module]]:
    """(embeddings, encoder layers) of a ViT-style classifier.

    Layouts differ between models and transformers versions (DINOv2: `encoder.layer`; ViT in
    transformers 5: `layers` on the model itself), so the known places are tried in turn.
    """
    base = model.base_model
    embeddings = getattr(base, "embeddings", None)
    for path in ("encoder.layer", "encoder.layers", "layers", "layer"):
        owner: object = base
        for name in path.split("."):
            owner = getattr(owner, name, None)
        if isinstance(owner, nn.ModuleList) and isinstance(embeddings, nn.Module):
            return embeddings, list(owner)
    raise ModelError(f"{type(model).__name__} has no embeddings and encoder layers to freeze")


def freeze_layers(model: nn.Module, count: int) -> int:
    """Freeze the embeddings and the first `count` encoder layers; returns the trainable parameter count.

    Frozen parameters get no gradient and, since nothing before them needs one, autograd records
    no graph through them: they run as cheaply as under `torch.no_grad`.
    """
    if count <= 0:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    embeddings, layers = encoder_parts(model)
    if count > len(layers):
        raise ModelError(f"--freeze-layers {count} is more than the model's {len(layers)} encoder layers")
    for module in (embeddings, *layers[:count]):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class PatchDropout:
    """While the model trains, let only a random `keep` share of each photo's patch tokens into the
    encoder (PatchDropout, Liu et al. 2022); in eval mode every token passes.

    Attention costs grow with the token count, so keeping half the patches makes a full
    fine-tuning step of ViT-S/14 about 2.5x faster on the CPU (3.1 s against 7-8.7 s for 32 photos
    on 2 cores), and the random subsets act as one more augmentation. The CLS (and any register)
    tokens always pass. The subsets are drawn from a generator seeded by (seed, step), like the
    augmentations, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, model: nn.Module, keep: float, seed: int) -> None:
        embeddings, _ = encoder_parts(model)
        self.keep = keep
        self.seed = seed
        self.leading = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.generator = torch.Generator()
        self.handle = embeddings.register_forward_hook(self._keep_some)

    def seed_step(self, step: int) -> None:
        """Seed the draws of training step `step`."""
        self.generator.manual_seed(int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0]))

    def _keep_some(self, module: nn.Module, _inputs: tuple, tokens: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        batch, count, width = tokens.shape
        patches = count - self.leading
        kept = max(1, round(patches * self.keep))
        order = torch.rand(batch, patches, generator=self.generator).argsort(dim=1)[:, :kept]
        index = order.to(tokens.device).unsqueeze(-1).expand(-1, -1, width)
        return torch.cat(
            [tokens[:, : self.leading], torch.gather(tokens[:, self.leading :], 1, index)], dim=1
        )


def hf_config(model: nn.Module) -> Any:
    """The transformers config of `model`; each architecture has fields of its own, hence `Any`."""
    return model.config


def forward_options(model: nn.Module, image_size: int) -> dict:
    """Extra forward arguments: ViT needs `interpolate_pos_encoding` at a size it was not trained at."""
    config = hf_config(model)
    if config.model_type == "vit" and config.image_size != image_size:
        return {"interpolate_pos_encoding": True}
    return {}


class LogitsAndEmbedding(nn.Module):
    """A classifier split at its head: returns (logits, embedding) for one batch of pixel values.

    The body is a copy of the model whose head is an identity, so its "logits" are exactly the
    features the head sees; the original model is left untouched.
    """

    def __init__(self, model: nn.Module, image_size: int) -> None:
        super().__init__()
        self.body = copy.deepcopy(model)
        head = self.body.classifier
        if not isinstance(head, nn.Module):
            raise ModelError(f"{type(model).__name__} has no classifier head to split off")
        self.head = head
        self.body.classifier = nn.Identity()
        self._options = forward_options(model, image_size)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.body(pixel_values=pixel_values, **self._options).logits
        return self.head(embedding), embedding


def mean_patch_span(model: nn.Module) -> tuple[int, int] | None:
    """Where the mean patch token sits in the embedding, or None where there is none: DINOv2's
    head sees [CLS, mean of the patch tokens], a ViT's the CLS token alone."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "dinov2":
        return None
    hidden = int(config.hidden_size)
    return hidden, 2 * hidden


def save_checkpoint(
    model: nn.Module, folder: Path, preprocessing: Preprocessing, base_model: str | None, preset: str | None
) -> None:
    """`save_pretrained` plus the preprocessing and origin the evaluator and exporter need."""
    folder.mkdir(parents=True, exist_ok=True)
    pretrained: Any = model  # a transformers model; nn.Module does not declare save_pretrained
    pretrained.save_pretrained(folder)
    (folder / PREPROCESSING_FILE).write_text(json.dumps(preprocessing.to_dict(), indent=2) + "\n")
    origin = {
        "base_model": base_model,
        "preset": preset,
        "architecture": type(model).__name__,
        "labels": checkpoint_labels(model),
    }
    (folder / TRAINER_FILE).write_text(json.dumps(origin, indent=2) + "\n")


def load_checkpoint(folder: str | Path) -> tuple[nn.Module, Preprocessing, dict]:
    """(model in eval mode, preprocessing, origin) of a checkpoint `save_checkpoint` wrote."""
    from transformers import AutoModelForImageClassification

    folder = Path(folder)
    if not (folder / PREPROCESSING_FILE).is_file():
        raise ModelError(f"{folder} is not a trainer checkpoint (no {PREPROCESSING_FILE}); run `train` first")
    model = AutoModelForImageClassification.from_pretrained(folder)
    model.eval()
    preprocessing = Preprocessing.from_dict(json.loads((folder / PREPROCESSING_FILE).read_text()))
    origin = json.loads((folder / TRAINER_FILE).read_text()) if (folder / TRAINER_FILE).is_file() else {}
    return model, preprocessing, origin


def checkpoint_labels(model: nn.Module) -> list[str]:
    config = hf_config(model)
    return [config.id2label[i] for i in range(config.num_labels)]


def resolve_device(device: str) -> torch.device:
    """`auto`: CUDA when PyTorch sees a GPU, else the CPU; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda, but PyTorch sees no CUDA GPU here; use --device auto or cpu")
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def run_on_photos(
    model: nn.Module,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    batch_size: int = 16,
    description: str = "running model",
    device: str = "cpu",
    decode_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) of every photo, preprocessed exactly as the app does.

    Photos are decoded in threads (Pillow lets go of the GIL), a batch ahead of the model, so a
    GPU is not left waiting on one decoding core. Results are fp32 whatever the device.
    """
    from concurrent.futures import ThreadPoolExecutor

    target = resolve_device(device)
    wrapper = LogitsAndEmbedding(model, preprocessing.size).eval().to(target)
    threads = decode_threads or min(8, os.cpu_count() or 1)
    logits, embeddings = [], []
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    def decode(batch: Sequence[Path]) -> np.ndarray:
        return np.stack(list(pool.map(lambda p: load_and_preprocess(p, preprocessing), batch)))

    with ThreadPoolExecutor(max_workers=threads) as pool, ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(decode, batches[0]) if batches else None
        for number in bar(range(len(batches)), description, total=len(batches), unit="batch"):
            assert pending is not None
            pixels = torch.from_numpy(pending.result()).to(target)
            if number + 1 < len(batches):
                pending = ahead.submit(decode, batches[number + 1])
            batch_logits, batch_embeddings = wrapper(pixels)
            logits.append(batch_logits.float().cpu().numpy())
            embeddings.append(batch_embeddings.float().cpu().numpy())
    if not logits:
        return np.zeros((0, hf_config(model).num_labels), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(embeddings)
