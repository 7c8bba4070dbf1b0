"""generate(): batched, per-sample seeded sampling; slerp; DDIM interpolations between seeds and classes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import randomised_tiny_unet

from dreamdata.errors import DreamdataError
from dreamdata.process import GaussianDiffusion, cosine_betas
from dreamdata.process.rng import per_sample_noise
from dreamdata.sampling.generate import (
    NonFiniteSamplesError,
    TrajectoryRecorder,
    generate,
    resolve_classes,
)
from dreamdata.sampling.interpolate import interpolate_classes, interpolate_seeds, slerp, slerp_path
from dreamdata.sampling.saving import to_uint8

CLASS_NAMES = ["hstripes", "vstripes", "square"]

# A frame decoded in a batch of 4 and the same sample decoded alone differ by float rounding only (MKL
# picks different kernels by batch size; guidance amplifies it by 1 + 2w).
BATCH_ROUNDING = 1e-4


@pytest.fixture(scope="module")
def network():
    return randomised_tiny_unet(len(CLASS_NAMES))


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(cosine_betas(50))


LABELS = torch.tensor([0, 1, 2, 0, 1])
SAMPLERS = [("ddpm", {}), ("ddim", {"eta": 1.0}), ("dpm++2m", {})]


class ElementwiseNet(torch.nn.Module):
    """A stand-in denoiser made only of elementwise multiplies and adds, so its arithmetic on a row cannot
    depend on the rest of the batch: with it, batch-size invariance must hold bit for bit."""

    in_channels, image_size, num_classes, null_class = 1, 8, 3, 3

    def forward(self, x, t, class_labels):
        labels = torch.full_like(t, self.null_class) if class_labels is None else class_labels
        shift = (labels.float() * 0.1 + t.float() * 0.01).view(-1, 1, 1, 1)
        return x * 0.7 + shift


@pytest.mark.parametrize("sampler, options", SAMPLERS)
def test_generate_is_invariant_to_batch_size(process, sampler, options):
    net = ElementwiseNet()
    runs = [generate(net, process, LABELS, 5, seed=3, sampler=sampler, steps=6, guidance_scale=1.5,
                     batch_size=batch, progress=False, **options) for batch in (1, 3, 5)]
    assert runs[0].shape == (5, 1, 8, 8) and runs[0].dtype == torch.float32
    assert runs[0].abs().max() <= 1.0
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("sampler, options", SAMPLERS)
def test_generate_with_a_unet_is_invariant_to_batch_size_up_to_float_rounding(network, process, sampler,
                                                                                options):
    # The noise is the same bit for bit; the UNet's matrix products may round a row differently in
    # batches of different sizes (MKL sgemm does for 1-3 rows vs 4+), so compare to float rounding.
    recorders = [TrajectoryRecorder(range(5), every=1, num_steps=6) for _ in range(3)]
    runs = [generate(network, process, LABELS, 5, seed=3, sampler=sampler, steps=6, batch_size=batch,
                     progress=False, on_step=recorder, **options)
            for batch, recorder in zip((1, 3, 5), recorders)]
    starts = [recorder.stacked()[1][:, 0] for recorder in recorders]  # x_T of every sample
    assert torch.equal(starts[0], starts[1]) and torch.equal(starts[0], starts[2])
    for other in runs[1:]:
        assert torch.allclose(runs[0], other, atol=1e-5, rtol=0)
        assert (to_uint8(runs[0]).int() - to_uint8(other).int()).abs().max() <= 1


def test_same_seed_same_images_different_seed_different(network, process):
    first = generate(network, process, LABELS, 5, seed=7, steps=5, progress=False)
    again = generate(network, process, LABELS, 5, seed=7, steps=5, progress=False)
    other = generate(network, process, LABELS, 5, seed=8, steps=5, progress=False)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # each sample differs from the others (no shared noise between rows)
    assert not torch.allclose(first[0], first[3])


def test_sample_depends_only_on_seed_and_global_index(process):
    net = ElementwiseNet()
    whole = generate(net, process, LABELS, 5, seed=1, steps=5, batch_size=2, progress=False)
    tail = generate(net, process, LABELS[3:], 2, seed=1, steps=5, start_index=3, progress=False)
    picked = generate(net, process, LABELS[[4, 1]], 2, seed=1, steps=5, indices=[4, 1], progress=False)
    assert torch.equal(tail, whole[3:])
    assert torch.equal(picked, whole[[4, 1]])


def test_generate_checks_its_arguments(network, process):
    with pytest.raises(ValueError, match="class_labels must lie in"):
        generate(network, process, torch.tensor([0, 3]), 2, seed=0, steps=2, progress=False)
    with pytest.raises(ValueError, match="entries for count"):
        generate(network, process, torch.tensor([0]), 2, seed=0, steps=2, progress=False)
    with pytest.raises(ValueError, match="needs class_labels"):
        generate(network, process, None, 2, seed=0, steps=2, guidance_scale=1.0, progress=False)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-1.0, -2.0, 0.0, 1.0, 3.0, 2 / 255 - 1])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 1]
    assert to_uint8(x).dtype == torch.uint8


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_to_uint8_refuses_non_finite_values_instead_of_writing_grey(bad):
    x = torch.zeros(3, 1, 2, 2)
    x[1, 0, 1, 1] = bad  # one bad pixel in the second of three images
    with pytest.raises(NonFiniteSamplesError, match="NaN/inf values in 1 of 3 images"):
        to_uint8(x)


def test_generate_refuses_a_network_that_outputs_nan(network, process):
    nan_network = copy.deepcopy(network)
    with torch.no_grad():
        for parameter in nan_network.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(NonFiniteSamplesError, match=r"run R, step 7: sampling \(ddim, 2 steps\) produced NaN/inf "
                                                    r"values in 2 of 2 images: the network's weights are NaN"):
        generate(nan_network, process, LABELS[:2], 2, seed=0, sampler="ddim", steps=2, progress=False,
                 source="run R, step 7")


def test_trajectory_recorder_keeps_every_kth_step_and_the_last(network, process):
    recorder = TrajectoryRecorder([0, 4], every=2, num_steps=5)
    images = generate(network, process, LABELS, 5, seed=0, steps=5, batch_size=2, progress=False,
                      on_step=recorder)
    timesteps, x_t, x0_hat = recorder.stacked()
    assert len(timesteps) == TrajectoryRecorder.columns(2, 5) == 3  # steps 0, 2, 4
    assert timesteps[0] == 49 and timesteps[-1] == 0
    assert x_t.shape == x0_hat.shape == (2, 3, 1, 8, 8)
    # the first recorded state of sample 4 is its own starting noise, though it ran in the third batch
    assert torch.equal(x_t[1, 0], per_sample_noise(0, [4], (1, 8, 8))[0])
    assert torch.allclose(x0_hat[1, -1].clamp(-1, 1), images[4], atol=0.05)


def test_resolve_classes_by_name_index_list_and_all():
    assert resolve_classes(None, CLASS_NAMES) == [0, 1, 2]
    assert resolve_classes(["all"], CLASS_NAMES) == [0, 1, 2]
    assert resolve_classes(["square"], CLASS_NAMES) == [2]
    assert resolve_classes(["Square,0", "2", "vstripes"], CLASS_NAMES) == [2, 0, 1]
    with pytest.raises(DreamdataError) as caught:
        resolve_classes(["squares"], CLASS_NAMES)
    message = str(caught.value)
    assert "\n" not in message and "'squares'" in message
    assert all(name in message for name in CLASS_NAMES)
    with pytest.raises(DreamdataError):
        resolve_classes(["3"], CLASS_NAMES)


# -- slerp ------------------------------------------------------------------------------------------


def test_slerp_endpoints_are_the_inputs():
    a, b = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    path = slerp_path(a, b, 5)
    assert path.shape == (5, 3, 4) and torch.equal(path[0], a) and torch.equal(path[-1], b)


def test_slerp_keeps_unit_vectors_on_the_sphere():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 64, dtype=torch.float64, generator=generator)
    a, b = a / a.norm(), b / b.norm()
    for weight in (0.1, 0.25, 0.5, 0.9):
        assert slerp(a, b, weight).norm().item() == pytest.approx(1.0, abs=1e-12)
    # and the angle to a grows linearly with the weight
    theta = torch.arccos(a @ b).item()
    assert torch.arccos(a @ slerp(a, b, 0.3)).item() == pytest.approx(0.3 * theta, abs=1e-9)


def test_slerp_midpoint_of_orthogonal_vectors():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(slerp(e1, e2, 0.5), torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2.0), atol=1e-7)
    # a chord would have norm 1/sqrt(2) there
    assert slerp(2 * e1, 2 * e2, 0.5).norm().item() == pytest.approx(2.0, abs=1e-6)


def test_slerp_handles_near_parallel_and_rejects_degenerate_vectors():
    a = torch.tensor([1.0, 0.0])
    nearly = torch.tensor([1.0, 1e-5])
    middle = slerp(a, nearly, 0.5)
    assert torch.isfinite(middle).all() and torch.allclose(middle, torch.tensor([1.0, 0.5e-5]), atol=1e-7)
    assert torch.equal(slerp(a, a.clone(), 0.5), a)
    with pytest.raises(ValueError, match="opposite"):
        slerp(a, -a, 0.5)
    with pytest.raises(ValueError, match="zero"):
        slerp(a, torch.zeros(2), 0.5)


# -- interpolation -----------------------------------------------------------------------------------


def ddim(network, process, label, seed, guidance=0.0):
    return generate(network, process, torch.tensor([label]), 1, seed=seed, sampler="ddim", steps=6,
                    guidance_scale=guidance, eta=0.0, progress=False)[0]


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_seed_interpolation_is_deterministic_and_ends_at_the_seeds_samples(network, process, guidance):
    frames = interpolate_seeds(network, process, 1, seed=4, seed2=9, frames=5, steps=6, guidance_scale=guidance)
    again = interpolate_seeds(network, process, 1, seed=4, seed2=9, frames=5, steps=6, guidance_scale=guidance)
    assert frames.shape == (5, 1, 8, 8) and torch.equal(frames, again)
    assert torch.allclose(frames[0], ddim(network, process, 1, 4, guidance), atol=BATCH_ROUNDING)
    assert torch.allclose(frames[-1], ddim(network, process, 1, 9, guidance), atol=BATCH_ROUNDING)
    assert not torch.allclose(frames[2], frames[0]) and not torch.allclose(frames[2], frames[-1])


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_class_interpolation_is_deterministic_and_ends_at_the_classes_samples(network, process, guidance):
    frames = interpolate_classes(network, process, 0, 2, seed=5, frames=4, steps=6, guidance_scale=guidance)
    again = interpolate_classes(network, process, 0, 2, seed=5, frames=4, steps=6, guidance_scale=guidance)
    assert frames.shape == (4, 1, 8, 8) and torch.equal(frames, again)
    assert torch.allclose(frames[0], ddim(network, process, 0, 5, guidance), atol=BATCH_ROUNDING)
    assert torch.allclose(frames[-1], ddim(network, process, 2, 5, guidance), atol=BATCH_ROUNDING)
    assert not torch.allclose(frames[1], frames[0])
    assert network.training is False  # the wrapper left the network's mode alone


def test_grid_preview_caps_columns_but_every_sample_is_written(tmp_path):
    import numpy as np
    from PIL import Image

    from dreamdata.sampling.saving import MAX_GRID_COLUMNS, write_samples

    images = torch.rand(40, 1, 4, 4) * 2 - 1
    write_samples(tmp_path / "u", images, None, [], per_row=40)
    width, height = Image.open(tmp_path / "u" / "grid.png").size
    assert width < height * 16 and width == MAX_GRID_COLUMNS * 4 + (MAX_GRID_COLUMNS + 1) * 2
    assert np.load(tmp_path / "u" / "samples.npz")["images"].shape[0] == 40
    labels = torch.arange(2).repeat_interleave(20)
    write_samples(tmp_path / "c", images, labels, ["a", "b"], per_row=20)
    width, height = Image.open(tmp_path / "c" / "grid.png").size
    assert (width, height) == (MAX_GRID_COLUMNS * 4 + (MAX_GRID_COLUMNS + 1) * 2, 2 * 4 + 3 * 2)
    assert len(list((tmp_path / "c" / "b").glob("*.png"))) == 20
