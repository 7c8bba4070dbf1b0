"""CLIP score per class (Hessel et al. 2021): how well each class's samples match the prompt "a photo of a
{class}", as ``max(100 * mean cos(E_image, E_text), 0)``.

The score itself is torchmetrics' ``CLIPScore``; this module feeds it one class at a time and loads the
model: a Hugging Face CLIP (``openai/clip-vit-base-patch32``, or a local directory) through transformers, or
an open_clip model written ``open_clip:ARCH/PRETRAINED`` (e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``).
Any ``(model, processor)`` pair with transformers' CLIP interface works (tests build a tiny random one).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from dreamdata.evaluation.extractor import MetricsUnavailable

__all__ = ["DEFAULT_PROMPT", "ClipScorer", "load_clip_scorer"]

DEFAULT_PROMPT = "a photo of a {}"


def _embedding(output) -> torch.Tensor:
    """transformers < 5 returns the projected embedding; 5.x a model output holding it as ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _EmbeddingsAsTensors(torch.nn.Module):
    """A CLIP model whose ``get_*_features`` return plain tensors, as torchmetrics' CLIPScore expects."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = getattr(model, "config", None)

    def get_image_features(self, *args, **kwargs):
        return _embedding(self.inner.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return _embedding(self.inner.get_text_features(*args, **kwargs))


class ClipScorer:
    """Per-class CLIP score of uint8 images with a given CLIP ``model`` and ``processor``."""

    def __init__(self, model, processor, prompt: str = DEFAULT_PROMPT, batch_size: int = 64):
        self.model, self.processor = _EmbeddingsAsTensors(model), processor
        self.prompt, self.batch_size = prompt, batch_size

    def class_prompt(self, class_name: str) -> str:
        return self.prompt.format(class_name.replace("_", " "))

    @torch.no_grad()
    def score(self, images: torch.Tensor, text: str) -> float:
        """CLIP score of uint8 ``images`` ``[N, C, H, W]`` against one caption."""
        from torchmetrics.multimodal.clip_score import CLIPScore

        metric = CLIPScore(model_name_or_path=lambda: (self.model, self.processor))
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        for begin in range(0, len(images), self.batch_size):
            batch = images[begin:begin + self.batch_size]
            metric.update(batch, [text] * len(batch))
        return float(metric.compute())

    def per_class(self, images: torch.Tensor, labels: Optional[torch.Tensor],
                  class_names: Sequence[str]) -> dict[str, float]:
        """``{class name: CLIP score of that class's images against "a photo of a {class}"}``."""
        if labels is None or (labels < 0).all():
            raise ValueError("CLIP score per class needs labelled samples (a class-conditional model)")
        return {class_names[label]: self.score(images[labels == label], self.class_prompt(class_names[label]))
                for label in labels.unique().tolist() if label >= 0}


class _OpenClipModel(torch.nn.Module):
    """open_clip behind transformers' ``get_image_features`` / ``get_text_features`` names."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def get_image_features(self, pixel_values):
        return self.inner.encode_image(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.inner.encode_text(input_ids)


class _OpenClipProcessor:
    """open_clip's preprocessing and tokenizer behind a transformers-style ``processor(...)`` call."""

    def __init__(self, preprocess, tokenizer):
        self.preprocess, self.tokenizer = preprocess, tokenizer

    def __call__(self, images=None, text=None, **_):
        from torchvision.transforms.functional import to_pil_image

        if images is not None:
            return {"pixel_values": torch.stack([self.preprocess(to_pil_image(image)) for image in images])}
        input_ids = self.tokenizer(text)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def load_clip_scorer(name: str, device: str | torch.device = "cpu", prompt: str = DEFAULT_PROMPT) -> ClipScorer:
    """A scorer for a transformers CLIP name/path or ``open_clip:ARCH/PRETRAINED`` (weights downloaded by
    those libraries on first use)."""
    if name.startswith("open_clip:"):
        try:
            import open_clip
        except ImportError:
            raise MetricsUnavailable(f"--clip-model {name}: `pip install open_clip_torch` first") from None
        arch, _, pretrained = name[len("open_clip:"):].partition("/")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        return ClipScorer(_OpenClipModel(model).to(device).eval(),
                          _OpenClipProcessor(preprocess, open_clip.get_tokenizer(arch)), prompt)
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError:
        raise MetricsUnavailable(f"--clip-model {name}: `pip install transformers` first") from None
    try:
        model = CLIPModel.from_pretrained(name).to(device).eval()
        processor = CLIPProcessor.from_pretrained(name)
    except OSError as error:
        raise MetricsUnavailable(f"--clip-model {name}: cannot load it ({error})") from None
    return ClipScorer(model, processor, prompt)
