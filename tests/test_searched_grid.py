"""The searched few-step grid (GITS, :mod:`dreamdata.sampling.searched_grid`): its dynamic programme against a
brute-force search, its jump costs against the closed form of Gaussian data, and the grid's contract."""

import itertools
import json
import math

import pytest
import torch

from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.schedules import cosine_betas
from dreamdata.sampling.searched_grid import cheapest_path, jump_costs, search_grid, teacher_trajectory
from dreamdata.sampling.timesteps import check_timesteps, timestep_sequence
from test_sampling import S, T, GaussianOracle


def random_costs(nodes: int, seed: int) -> torch.Tensor:
    cost = torch.rand((nodes, nodes), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.where(torch.ones(nodes, nodes, dtype=torch.bool).triu(1), cost, torch.full_like(cost, math.inf))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cheapest_path_is_the_brute_force_optimum(seed):
    nodes = 9
    cost = random_costs(nodes, seed)
    for edges in range(1, nodes):
        best_total, best_path = math.inf, None
        for middle in itertools.combinations(range(1, nodes - 1), edges - 1):  # every path 0 -> ... -> end
            path = (0, *middle, nodes - 1)
            total = sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:]))
            if total < best_total:
                best_total, best_path = total, list(path[:-1])
        path, total = cheapest_path(cost, edges)
        assert path == best_path
        assert total == pytest.approx(best_total, rel=1e-12)


def test_cheapest_path_rejects_impossible_lengths():
    with pytest.raises(ValueError, match="edges must lie in 1..4"):
        cheapest_path(random_costs(5, 0), 5)


def test_jump_costs_match_the_gaussian_closed_form():
    # Data x0 ~ N(0, s^2) per pixel, exact denoiser. Along the probability-flow ODE x_t / sqrt(v_t) is constant,
    # v_t = ab_t s^2 + 1 - ab_t, so the exact x_j = sqrt(v_j / v_i) x_i. One DDIM step from x_i lands on
    # [sqrt(ab_i ab_j) s^2 + sqrt((1 - ab_i)(1 - ab_j))] / v_i x_i (x0_hat = sqrt(ab_i) s^2 x_i / v_i, eps_hat =
    # sqrt(1 - ab_i) x_i / v_i). The cost is the batch mean of the L2 norm of the difference.
    process = GaussianDiffusion(cosine_betas(T))
    network = GaussianOracle(process, torch.zeros_like(S).unsqueeze(0), S)
    noise = torch.randn((512, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    trajectory = teacher_trajectory(network, process, noise, candidates=200)  # fine: the teacher's own error is small
    alpha_bar = process.schedule.alpha_bar.double()
    cost = jump_costs(trajectory, alpha_bar)
    ab = [float(alpha_bar[t]) for t in trajectory.timesteps] + [1.0]
    s2 = S.double() ** 2
    v = [a * s2 + 1 - a for a in ab]
    for i, j in [(0, 1), (0, 50), (15, 125), (50, 199), (100, 200), (0, 200)]:
        x_i = trajectory.states[i].double()
        stepped = (math.sqrt(ab[i] * ab[j]) * s2 + math.sqrt((1 - ab[i]) * (1 - ab[j]))) / v[i]
        exact = (v[j] / v[i]).sqrt()
        expected = ((stepped - exact) * x_i).flatten(1).norm(dim=1).mean()
        assert float(cost[i, j]) == pytest.approx(float(expected), rel=0.02, abs=1e-4), (i, j)
    # the teacher's last step is itself the first-order jump from its last candidate to the clean end
    assert float(cost[199, 200]) == 0.0
    assert math.isinf(float(cost[5, 5])) and math.isinf(float(cost[6, 5]))


def test_searched_grid_is_a_valid_descending_grid_from_pure_noise():
    process = GaussianDiffusion(cosine_betas(T))
    network = GaussianOracle(process, torch.zeros_like(S).unsqueeze(0), S)
    found = search_grid(network, process, (1, 2, 2), steps=6, candidates=30, batch=64)
    steps = check_timesteps(found.timesteps, T).tolist()
    assert len(steps) == 6 and steps[0] == T - 1
    assert found.linspace_cost is None or found.cost <= found.linspace_cost + 1e-12
    again = search_grid(network, process, (1, 2, 2), steps=6, candidates=30, batch=64)
    assert again.timesteps == found.timesteps  # the teacher's noise is seeded
    with pytest.raises(ValueError, match="steps must lie in 1..29"):
        search_grid(network, process, (1, 2, 2), steps=30, candidates=30, batch=8)


def test_search_grid_command_stores_a_grid_that_sample_uses(tmp_path, tiny_overrides, capsys):
    from dreamdata.cli import main
    from dreamdata.config import load_config
    from dreamdata.sampling.grid_store import GRIDS_FILE
    from dreamdata.training.trainer import train

    run_dir = train(load_config("tiny", [*tiny_overrides, "train.steps=2", "train.sample_grid=false"])).run_dir
    out = tmp_path / "samples"
    # before a search: a one-line error that says what to run
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "4", "--spacing", "searched", "--device", "cpu",
                 "--out", str(out)]) == 2
    assert "dreamdata search-grid RUN --steps 4" in capsys.readouterr().err
    assert main(["search-grid", str(run_dir), "--steps", "4", "--candidates", "12", "--batch", "6",
                 "--device", "cpu"]) == 0
    assert GRIDS_FILE in capsys.readouterr().out
    stored = json.loads((run_dir / GRIDS_FILE).read_text())["grids"]
    assert [entry["steps"] for entry in stored] == [4] and stored[0]["weights"] == "ema"
    grid = stored[0]["timesteps"]
    candidates = timestep_sequence(50, 12).tolist()  # the tiny preset's T = 50
    assert grid[0] == 49 and len(grid) == 4 and all(t in candidates for t in grid) and grid == sorted(grid)[::-1]
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "4", "--spacing", "searched", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert json.loads((out / "sample.json").read_text())["timesteps"] == grid
    # the grid belongs to the EMA weights it was searched with
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "4", "--spacing", "searched", "--no-ema",
                 "--device", "cpu", "--out", str(tmp_path / "raw")]) == 2
    # searching again for the same steps replaces the entry; another step count is added beside it
    assert main(["search-grid", str(run_dir), "--steps", "4", "--candidates", "12", "--batch", "6",
                 "--device", "cpu"]) == 0
    assert main(["search-grid", str(run_dir), "--steps", "3", "--candidates", "12", "--batch", "6",
                 "--device", "cpu"]) == 0
    assert sorted(entry["steps"] for entry in json.loads((run_dir / GRIDS_FILE).read_text())["grids"]) == [3, 4]
    capsys.readouterr()
    assert main(["search-grid", str(run_dir), "--steps", "12", "--candidates", "12", "--device", "cpu"]) == 2
    assert "--steps 12: must be below the 12 candidate timesteps" in capsys.readouterr().err


def test_a_damaged_grid_file_is_a_one_line_error(tmp_path, tiny_overrides, capsys):
    from dreamdata.cli import main
    from dreamdata.config import load_config
    from dreamdata.sampling.grid_store import GRIDS_FILE
    from dreamdata.training.trainer import train

    run_dir = train(load_config("tiny", [*tiny_overrides, "train.steps=1", "train.sample_grid=false"])).run_dir
    (run_dir / GRIDS_FILE).write_text("{not json")
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "4", "--device", "cpu",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert GRIDS_FILE in err and "delete it" in err and "Traceback" not in err


def test_a_dream_on_a_searched_grid_records_it_and_refuses_to_resume_on_another(tmp_path, tiny_overrides, capsys):
    from dreamdata.cli import main
    from dreamdata.config import load_config
    from dreamdata.sampling.grid_store import record_grid
    from dreamdata.training import checkpoint as ckpt
    from dreamdata.training.trainer import train

    run_dir = train(load_config("tiny", [*tiny_overrides, "train.steps=1", "train.sample_grid=false"])).run_dir
    checkpoint = ckpt.load_latest(run_dir, report=False).path
    record_grid(checkpoint, "ema", {"steps": 3, "timesteps": [49, 20, 5]})
    out = tmp_path / "dream"
    command = ["dream", str(run_dir), "--per-class", "2", "--out", str(out), "--steps", "3", "--spacing", "searched",
               "--chunk", "2", "--workers", "1", "--device", "cpu"]
    assert main([*command, "--max-chunks", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["spec"]["searched_timesteps"] == [49, 20, 5]
    record_grid(checkpoint, "ema", {"steps": 3, "timesteps": [49, 30, 10]})  # a later search found another grid
    capsys.readouterr()
    assert main(command) == 2
    assert "searched_timesteps" in capsys.readouterr().err
