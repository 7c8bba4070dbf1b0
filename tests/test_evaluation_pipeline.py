"""The evaluation pipeline end to end on CPU: a tiny TorchScript extractor, the feature cache, sample sets,
`dreamdata evaluate` on a samples npz and on a trained run, reconstruction metrics, CLIP score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from dreamdata.cli import main
from dreamdata.errors import DataError
from dreamdata.evaluation.extractor import ImageFeatures, TorchScriptExtractor, inception_input
from dreamdata.evaluation.feature_cache import extract_features
from dreamdata.evaluation.suite import EvaluationOptions, ImageSet, SmallSampleWarning, evaluate_images
from conftest import TinyFeatures, make_pattern_images


class CountingExtractor:
    name = "counting-test-extractor"

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return ImageFeatures(images.float().mean(dim=(2, 3)).repeat(1, 4) + torch.arange(4.0).repeat_interleave(
            images.shape[1]))


def frechet_distance_by_hand(reference_images: torch.Tensor, sample_images: torch.Tensor) -> float:
    """FID recomputed independently of dreamdata's metrics: the tiny extractor's network (TinyFeatures) on the
    TF-FID input of each uint8 set, then ||mu_r - mu_s||^2 + Tr(S_r + S_s - 2 sqrtm(S_r S_s)) with numpy's
    unbiased covariances and scipy's matrix square root (Heusel et al. 2017, eq. 6)."""
    with torch.no_grad():
        features = [TinyFeatures()(inception_input(images)).double().numpy()
                    for images in (reference_images, sample_images)]
    (mean_r, cov_r), (mean_s, cov_s) = [(f.mean(0), np.cov(f, rowvar=False)) for f in features]
    return float(((mean_r - mean_s) ** 2).sum()
                 + np.trace(cov_r + cov_s - 2 * scipy.linalg.sqrtm(cov_r @ cov_s).real))


class RecordingEvaluation:
    """Wraps ``evaluate_images`` to keep the uint8 images of the two sets each call compared, so a test can
    recompute their FID by hand."""

    def __init__(self, evaluate_images):
        self.evaluate_images = evaluate_images
        self.compared: list[tuple[torch.Tensor, torch.Tensor]] = []  # (samples, reference) per call

    def __call__(self, samples, reference, extractor, options=None):
        self.compared.append((samples.images.clone(), reference.images.clone()))
        return self.evaluate_images(samples, reference, extractor, options)


def pattern_set(per_class: int, seed: int, source: str) -> ImageSet:
    images, labels = make_pattern_images(per_class, size=8, seed=seed)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                    ["hstripes", "vstripes", "square"], source)


def test_inception_input_is_the_tf_fid_protocol():
    images = torch.tensor([[[[0, 255], [255, 0]]]], dtype=torch.uint8)
    x = inception_input(images, size=4)
    assert x.shape == (1, 3, 4, 4)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grayscale repeated
    # Bilinear 2 -> 4 with half-pixel centres (align_corners=False): output pixel i samples the input at
    # (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1], so each row of [a, b] becomes
    # [a, 3a/4 + b/4, a/4 + 3b/4, b]; in [-1, 1] the checkerboard [[-1, 1], [1, -1]] gives, by hand:
    expected = torch.tensor([[-1.0, -0.5, 0.5, 1.0],
                             [-0.5, -0.25, 0.25, 0.5],
                             [0.5, 0.25, -0.25, -0.5],
                             [1.0, 0.5, -0.5, -1.0]])
    torch.testing.assert_close(x[0, 0], expected)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0  # no antialias, corners keep their values
    with pytest.raises(ValueError, match="uint8"):
        inception_input(images.float())


def test_feature_cache_reuses_features_of_identical_pixels_only(tmp_path):
    extractor = CountingExtractor()
    images = pattern_set(4, 0, "a").images
    first = extract_features(images, extractor, cache_dir=tmp_path, progress=False)
    again = extract_features(images.clone(), extractor, cache_dir=tmp_path, progress=False)
    assert extractor.calls == 1 and torch.equal(first.pool, again.pool) and again.seconds == 0.0
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    extract_features(changed, extractor, cache_dir=tmp_path, progress=False)
    assert extractor.calls == 2
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically


def test_evaluate_images_reports_every_metric_and_warns_on_small_n(tmp_path, tiny_extractor_file):
    extractor = TorchScriptExtractor(tiny_extractor_file)
    samples, reference = pattern_set(10, 1, "samples"), pattern_set(10, 2, "reference")
    options = EvaluationOptions(kid_subset_size=20, kid_subsets=5, is_splits=2, cache_dir=tmp_path,
                                progress=False)
    with pytest.warns(SmallSampleWarning, match="N = 30"):
        result = evaluate_images(samples, reference, extractor, options)
    assert result["n_samples"] == 30 and result["n_reference"] == 30
    assert set(result["fid_per_class"]) == {"hstripes", "vstripes", "square"}
    assert result["inception_score"] is None and "no classifier head" in result["inception_score_note"]
    assert result["fid"] == pytest.approx(frechet_distance_by_hand(reference.images, samples.images), rel=1e-4)
    # same patterns, another seed: nearly every sample lies in the reference's manifold and vice versa
    assert result["precision"] >= 0.9 and result["recall"] >= 0.9
    # the same samples at a quarter of the brightness: every metric says they are worse
    dark = ImageSet(samples.images // 4, samples.labels, samples.class_names, "dark")
    with pytest.warns(SmallSampleWarning):
        worse = evaluate_images(dark, reference, extractor, options)
    assert worse["fid"] > 100 * result["fid"] and worse["kid_mean"] > result["kid_mean"]
    assert all(worse["fid_per_class"][name] > result["fid_per_class"][name] for name in result["fid_per_class"])
    assert worse["precision"] == 0.0 and worse["recall"] == 0.0
    itself = evaluate_images(reference, reference, extractor, options)
    assert itself["fid"] == pytest.approx(0.0, abs=1e-6)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in itself["fid_per_class"].values())
    assert itself["precision"] == 1.0 and itself["recall"] == 1.0


def test_evaluate_images_refuses_mismatched_sets(tmp_path):
    samples = pattern_set(4, 0, "samples")
    bigger = ImageSet(torch.zeros(12, 1, 10, 10, dtype=torch.uint8), None, [], "bigger")
    with pytest.raises(DataError, match=r"1x8x8 .* 1x10x10"):
        evaluate_images(samples, bigger, CountingExtractor(), EvaluationOptions(cache_dir=tmp_path))
    empty = ImageSet(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), None, [], "empty set")
    with pytest.raises(DataError, match="empty set: no images"):
        evaluate_images(empty, samples, CountingExtractor(), EvaluationOptions(cache_dir=tmp_path))


def test_nan_features_are_an_error_not_a_silent_nan(tmp_path):
    class NanExtractor(CountingExtractor):
        name = "nan-test-extractor"

        def __call__(self, images):
            features = super().__call__(images)
            features.pool[0, 0] = float("nan")
            return features

    with pytest.raises(FloatingPointError, match="NaN"):
        extract_features(pattern_set(2, 0, "x").images, NanExtractor(), cache_dir=tmp_path, progress=False)


def write_samples_npz(path, image_set: ImageSet):
    np.savez(path, images=image_set.images.permute(0, 2, 3, 1).numpy(), labels=image_set.labels.numpy(),
             class_names=np.array(image_set.class_names))


def test_evaluate_cli_on_a_samples_npz(tmp_path, tiny_npz, tiny_extractor_file, monkeypatch, capsys):
    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    samples = tmp_path / "samples"
    samples.mkdir()
    write_samples_npz(samples / "samples.npz", pattern_set(6, 5, "samples"))
    code = main(["evaluate", str(samples), "--ref", f"npz:{tiny_npz}", "--fid-weights", str(tiny_extractor_file),
                 "--n", "18", "--metrics", "fid,kid,pr"])
    assert code == 0
    result = json.loads((samples / "metrics.json").read_text())
    assert result["n_samples"] == 18 and result["n_reference"] == 18
    assert {"fid", "kid_mean", "kid_std", "precision", "recall", "fid_per_class"} <= set(result)
    assert "is_mean" not in result
    assert any("N = 18" in w for w in result["warnings"])
    out = capsys.readouterr().out
    assert "FID" in out and "KID" in out and "wrote" in out


def test_evaluate_cli_errors_name_what_is_wrong(tmp_path, tiny_npz, tiny_extractor_file, capsys):
    samples = tmp_path / "s.npz"
    write_samples_npz(samples, pattern_set(6, 5, "samples"))
    assert main(["evaluate", str(samples), "--fid-weights", str(tiny_extractor_file)]) == 2
    assert "--ref DATASET is needed" in capsys.readouterr().err
    assert main(["evaluate", str(samples), "--ref", f"npz:{tiny_npz}", "--ref-set", "pad_to=12",
                 "--fid-weights", str(tiny_extractor_file)]) == 2
    error = capsys.readouterr().err
    assert "1x8x8" in error and "1x12x12" in error
    assert main(["evaluate", str(samples), "--ref", f"npz:{tiny_npz}", "--fid-weights",
                 str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(samples), "--ref", f"npz:{tiny_npz}", "--ref-set", "colour=3",
                 "--fid-weights", str(tiny_extractor_file)]) == 2
    assert "unknown data option 'colour'" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_cli_on_a_trained_run(tmp_path, tiny_overrides, tiny_npz, tiny_extractor_file, monkeypatch):
    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DREAMDATA_FID_WEIGHTS", str(tiny_extractor_file))
    assert main(["train", "tiny", *tiny_overrides, "train.steps=3", "train.sample_grid=false",
                 "train.progress=false", "name=evalrun"]) == 0
    run = next((tmp_path / "runs").glob("*-evalrun"))
    out = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", str(run), "--n", "12", "--steps", "3", "--batch", "5", "--reconstruction",
                 "--out", str(out), "--metrics", "fid,pr"]) == 0
    result = json.loads(out.read_text())
    assert result["n_samples"] == 12 and result["sampler"] == "ddim" and result["steps"] == 3
    assert result["samples_per_second"] > 0
    assert result["step"] == 3 and set(result["fid_per_class"]) == {"hstripes", "vstripes", "square"}
    buckets = result["reconstruction"]["buckets"]
    assert [b["t_low"] for b in buckets] == sorted(b["t_low"] for b in buckets) and len(buckets) >= 3
    assert all(np.isfinite([b["rmse"], b["ssim"], b["psnr"], b["eps_mse"]]).all() for b in buckets)


class PointMassOracle(torch.nn.Module):
    """The exact eps-model for data that is one fixed image x*: eps = (x_t - sqrt(ab) x*) / sqrt(1 - ab)."""

    def __init__(self, process, target: torch.Tensor):
        super().__init__()
        self.process, self.target = process, target
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x, t, labels):
        ab = self.process.schedule.alpha_bar.to(x)[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.target) / (1 - ab).sqrt()


def test_reconstruction_is_exact_with_the_optimal_denoiser_and_worsens_with_t_without_it():
    from dreamdata.config import ProcessConfig
    from dreamdata.evaluation.reconstruction import default_buckets, reconstruction_metrics
    from dreamdata.process import build_process

    from dreamdata.process import ScheduleWarning

    with pytest.warns(ScheduleWarning, match="alpha_bar_T = 0.364"):  # linear, T = 100: x_T is not pure noise
        process = build_process(ProcessConfig(num_steps=100))
    assert default_buckets(100) == [(0, 9), (10, 24), (25, 49), (50, 74), (75, 99)]
    image = torch.from_numpy(make_pattern_images(1, size=16)[0][:1]).permute(0, 3, 1, 2).contiguous()
    clean = image.repeat(6, 1, 1, 1)
    target = image.float() / 127.5 - 1
    exact = reconstruction_metrics(PointMassOracle(process, target), process, clean, ddim_steps=10, batch_size=4)
    for bucket in exact["buckets"]:
        assert bucket["eps_mse"] < 1e-8 and bucket["rmse"] < 1e-4
        assert bucket["ssim"] > 0.9999 and bucket["psnr"] > 70

    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, labels):
            return torch.zeros_like(x)

    blind = reconstruction_metrics(Zero(), process, clean, ddim_steps=10)["buckets"]
    assert blind[0]["eps_mse"] == pytest.approx(1.0, rel=0.1)  # predicting 0 for N(0, I) noise
    assert blind[-1]["rmse"] > blind[0]["rmse"] and blind[-1]["psnr"] < blind[0]["psnr"]


def tiny_clip():
    """A randomly initialised transformers CLIP small enough to build in a test, and a byte-level processor."""
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 260, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 40},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
        projection_dim=8)
    config.text_config.bos_token_id, config.text_config.eos_token_id = 1, 2
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()

    class ByteProcessor:
        def __call__(self, images=None, text=None, **_):
            if images is not None:
                x = torch.stack([image.float() / 255 for image in images])
                return {"pixel_values": torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear")}
            ids = [list(caption.encode())[:38] for caption in text]
            width = max(map(len, ids))
            input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
            return {"input_ids": input_ids, "attention_mask": mask}

    return model, ByteProcessor()


def test_clip_score_per_class_is_100_times_the_mean_cosine(tmp_path):
    from dreamdata.evaluation.clip_score import ClipScorer

    model, processor = tiny_clip()
    data = pattern_set(3, 0, "samples")
    scorer = ClipScorer(model, processor)
    scores = scorer.per_class(data.images, data.labels, data.class_names)
    assert list(scores) == ["hstripes", "vstripes", "square"]
    with torch.no_grad():
        for label, name in enumerate(data.class_names):
            images = data.images[data.labels == label].repeat(1, 3, 1, 1)
            image_features = model.get_image_features(**processor(images=list(images)))
            text = processor(text=[f"a photo of a {name}"])
            text_features = model.get_text_features(text["input_ids"], text["attention_mask"])
            if not isinstance(image_features, torch.Tensor):  # transformers >= 5 returns model outputs
                image_features, text_features = image_features.pooler_output, text_features.pooler_output
            cosine = torch.nn.functional.cosine_similarity(image_features, text_features)
            assert scores[name] == pytest.approx(max(100 * float(cosine.mean()), 0.0), abs=1e-3)
    with pytest.raises(ValueError, match="labelled samples"):
        scorer.per_class(data.images, None, data.class_names)


def test_evaluation_during_training_logs_metrics_without_changing_the_loss_trace(
        tmp_path, tiny_overrides, tiny_extractor_file, monkeypatch):
    from dreamdata.evaluation import during_training
    from dreamdata.training.run_dir import read_metrics

    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    recording = RecordingEvaluation(during_training.evaluate_images)
    monkeypatch.setattr(during_training, "evaluate_images", recording)
    common = ["train", "tiny", *tiny_overrides, "train.steps=6", "train.log_every=1", "train.sample_grid=false",
              "train.progress=false"]
    assert main([*common, "name=plain"]) == 0
    assert main([*common, "name=evaluated", "evaluation.every=3", "evaluation.samples=12", "evaluation.steps=2",
                 "evaluation.reference_count=24", "evaluation.metrics=[fid,kid,pr]",
                 f"evaluation.fid_weights={tiny_extractor_file}"]) == 0
    plain = read_metrics(next((tmp_path / "runs").glob("*-plain")))
    run = next((tmp_path / "runs").glob("*-evaluated"))
    evaluated = read_metrics(run)
    assert [r["loss"] for r in plain] == [r["loss"] for r in evaluated if "loss" in r]
    evaluations = [r for r in evaluated if "eval_fid" in r]
    assert [r["step"] for r in evaluations] == [3, 6]
    assert all(r["eval_n"] == 12 and "eval_kid" in r and "eval_precision" in r for r in evaluations)
    # each logged FID is the Frechet distance, computed by hand, of the 12 samples and 24 reference images compared
    assert len(recording.compared) == len(evaluations)
    for record, (samples, reference) in zip(evaluations, recording.compared):
        assert len(samples) == 12 and len(reference) == 24
        assert record["eval_fid"] == pytest.approx(frechet_distance_by_hand(reference, samples), rel=1e-4, abs=1e-6)
    assert (run / "metrics.png").stat().st_size > 0


def test_evaluation_config_errors_name_the_key(tiny_overrides):
    from dreamdata.config import load_config
    from dreamdata.errors import ConfigError

    with pytest.raises(ConfigError, match="evaluation.metrics: 'fidd'"):
        load_config("tiny", [*tiny_overrides, "evaluation.metrics=[fidd]"])
    with pytest.raises(ConfigError, match="evaluation.samples"):
        load_config("tiny", [*tiny_overrides, "evaluation.samples=1"])


def test_evaluate_cli_on_a_blur_run_uses_the_cold_sampler(tmp_path, tiny_overrides, tiny_extractor_file,
                                                          monkeypatch, capsys):
    from dreamdata.evaluation import suite

    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    recording = RecordingEvaluation(suite.evaluate_images)
    monkeypatch.setattr(suite, "evaluate_images", recording)
    assert main(["train", "tiny", *tiny_overrides, "train.steps=2", "train.sample_grid=false", "train.progress=false",
                 "process.kind=blur", "process.num_steps=4", "process.kernel_size=3", "name=blurrun"]) == 0
    run = next((tmp_path / "runs").glob("*-blurrun"))
    out = tmp_path / "blur-eval.json"
    assert main(["evaluate", str(run), "--n", "9", "--metrics", "fid", "--fid-weights", str(tiny_extractor_file),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["sampler"] == "cold-improved" and result["steps"] == 4
    # the FID written is the Frechet distance, computed by hand, of the 9 restored samples and the reference
    ((samples, reference),) = recording.compared
    assert len(samples) == 9
    assert result["fid"] == pytest.approx(frechet_distance_by_hand(reference, samples), rel=1e-4, abs=1e-6)
    assert main(["evaluate", str(run), "--n", "9", "--reconstruction", "--fid-weights",
                 str(tiny_extractor_file)]) == 2
    assert "--from-test" in capsys.readouterr().err
