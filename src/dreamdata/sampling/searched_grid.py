"""A few-step timestep grid searched for one trained model, in the manner of GITS (Chen et al. 2024, "On the
Trajectory Regularity of ODE-based Diffusion Sampling", sec. 4).

The formula grids of :mod:`~dreamdata.sampling.timesteps` are the same for every model. GITS instead prices the
jumps a few-step sampler could take *for the model at hand*, and picks the cheapest path:

1. **Teacher.** A fine deterministic solve (DPM-Solver++(2M), ODE) from a small batch of noise through ``C``
   candidate timesteps ``t_0 = T - 1 > t_1 > ... > t_{C-1}``, recording the state ``x_i`` and the prediction
   ``x0_hat_i`` at every candidate, and the final sample (the "clean" node ``C``, where ``sigma = 0``).
2. **Jump costs.** The cost of jumping from node ``i`` to a later node ``j`` is the error of one first-order
   step (DDIM with ``eta = 0``, Song et al. 2021, eq. 12) taken from the teacher's ``x_i`` with its ``x0_hat_i``,
   against the teacher's ``x_j``::

       eps_i = (x_i - sqrt(ab_i) x0_hat_i) / sqrt(1 - ab_i)           (Ho et al. 2020, eq. 4)
       cost(i, j) = mean over the batch of || sqrt(ab_j) x0_hat_i + sqrt(1 - ab_j) eps_i - x_j ||_2

   (with ``ab`` the schedule's ``alpha_bar`` and ``ab = 1`` at the clean node, where the step lands on
   ``x0_hat_i``). One teacher solve gives every cost: the ``C`` network calls it makes are all the predictions
   the first-order jumps need.
3. **Cheapest path.** The grid of ``S`` steps is the path ``0 = n_0 < n_1 < ... < n_{S-1} < n_S = C`` of least
   total cost: ``S`` network calls, at ``T - 1`` first, then wherever the jumps are cheapest. Dynamic programming
   over (edges used, node) finds it exactly in ``O(S C^2)``.

The costs are those of a first-order ODE step, but GITS reports the grid carries over to higher-order solvers,
and measured here it does to the stochastic SDE-DPM-Solver++(3M) (BENCHMARKS.md, "A 10-step grid found by
dynamic programming"). A grid belongs to the checkpoint it was searched on.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from dreamdata.process.base import Network
from dreamdata.process.gaussian import GaussianDiffusion

__all__ = ["SearchedGrid", "TeacherTrajectory", "cheapest_path", "jump_costs", "search_grid", "teacher_trajectory"]

DEFAULT_CANDIDATES = 100  # the teacher's timesteps (GITS uses a fine grid of about this size)
DEFAULT_BATCH = 256  # teacher trajectories: the costs are batch means, so a few hundred suffice
DEFAULT_NOISE_SEED = 7  # the teacher's noise: any seed the evaluations do not use


class TeacherTrajectory(NamedTuple):
    """A fine deterministic solve: the candidate timesteps (descending), the state and prediction at each, and
    the final sample."""

    timesteps: list[int]
    states: list[torch.Tensor]  # x_i at timesteps[i]
    predictions: list[torch.Tensor]  # x0_hat_i at timesteps[i]
    final: torch.Tensor  # the sample the solve ends on (the clean node)


class SearchedGrid(NamedTuple):
    """The cheapest ``steps``-step grid and its cost, with the cost of the ``linspace`` grid for comparison."""

    timesteps: list[int]
    cost: float
    linspace_cost: Optional[float]  # None when linspace's indices are not all candidates


@torch.no_grad()
def teacher_trajectory(network: Network, process: GaussianDiffusion, noise: torch.Tensor,
                       candidates: int = DEFAULT_CANDIDATES, class_labels: Optional[torch.Tensor] = None
                       ) -> TeacherTrajectory:
    """Solve the probability-flow ODE from ``noise`` with DPM-Solver++(2M) through ``candidates`` ``linspace``
    timesteps (from ``T - 1`` to 0), recording every state and prediction (the module docstring's step 1)."""
    from dreamdata.sampling.dpm_solver import dpm_solver_pp_2m_sample
    from dreamdata.sampling.timesteps import timestep_sequence

    timesteps = timestep_sequence(process.num_steps, candidates).tolist()
    states: list[torch.Tensor] = []
    predictions: list[torch.Tensor] = []

    def record(i: int, tau: int, x: torch.Tensor, x0_hat: torch.Tensor) -> None:
        states.append(x.detach().float().clone())
        predictions.append(x0_hat.detach().float().clone())

    final = dpm_solver_pp_2m_sample(network, process, noise, timesteps=timesteps, class_labels=class_labels,
                                    callback=record)
    return TeacherTrajectory(timesteps, states, predictions, final.float())


def jump_costs(trajectory: TeacherTrajectory, alpha_bar: torch.Tensor) -> torch.Tensor:
    """``[C + 1, C + 1]`` costs of one first-order jump between the teacher's nodes (the module docstring's
    step 2); node ``C`` is the clean end. Entries not forward in time (``j <= i``), and every jump out of the
    clean node, are ``inf``."""
    nodes = len(trajectory.timesteps)
    ab = [float(alpha_bar[t]) for t in trajectory.timesteps] + [1.0]  # the clean node: sigma = 0
    targets = trajectory.states + [trajectory.final]
    cost = torch.full((nodes + 1, nodes + 1), math.inf, dtype=torch.float64)
    for i in range(nodes):
        x0_hat = trajectory.predictions[i]
        eps_hat = (trajectory.states[i] - math.sqrt(ab[i]) * x0_hat) / math.sqrt(1.0 - ab[i])  # Ho et al., eq. 4
        for j in range(i + 1, nodes + 1):
            jumped = math.sqrt(ab[j]) * x0_hat + math.sqrt(1.0 - ab[j]) * eps_hat  # Song et al. 2021, eq. 12
            cost[i, j] = float((jumped - targets[j]).flatten(1).norm(dim=1).mean())
    return cost


def cheapest_path(cost: torch.Tensor, edges: int) -> tuple[list[int], float]:
    """The path ``0 = n_0 < n_1 < ... < n_edges = N - 1`` through the nodes of the ``[N, N]`` matrix ``cost``
    with the least total ``sum_k cost[n_k, n_{k+1}]``, and that total: the visited nodes ``n_0 .. n_{edges-1}``
    (the last node, the end, is not a network call and is left out).

    Dynamic programming: ``best[k, j]`` is the least cost of reaching node ``j`` from node 0 in exactly ``k``
    edges, ``best[k, j] = min_{i < j} best[k - 1, i] + cost[i, j]``.
    """
    n = cost.shape[0]
    if not 1 <= edges <= n - 1:
        raise ValueError(f"edges must lie in 1..{n - 1} for {n} nodes, got {edges}")
    best = torch.full((edges + 1, n), math.inf, dtype=torch.float64)
    parent = torch.full((edges + 1, n), -1, dtype=torch.long)
    best[0, 0] = 0.0
    for k in range(1, edges + 1):
        for j in range(k, n):
            totals = best[k - 1, :j] + cost[:j, j].to(torch.float64)
            i = int(totals.argmin())
            best[k, j], parent[k, j] = totals[i], i
    node, path = n - 1, []
    for k in range(edges, 0, -1):
        node = int(parent[k, node])
        path.append(node)
    return path[::-1], float(best[edges, n - 1])


def search_grid(network: Network, process: GaussianDiffusion, image_shape: tuple[int, ...], steps: int,
                candidates: int = DEFAULT_CANDIDATES, batch: int = DEFAULT_BATCH, seed: int = DEFAULT_NOISE_SEED,
                class_labels: Optional[torch.Tensor] = None, device: torch.device | str = "cpu") -> SearchedGrid:
    """The cheapest ``steps``-step grid for ``network`` (the module docstring): a teacher from ``batch`` noise
    images of ``image_shape`` (``[C, H, W]``) drawn with ``seed``, ``candidates`` candidate timesteps.
    ``class_labels`` (``[batch]``) for a class-conditional network (unguided)."""
    from dreamdata.sampling.timesteps import timestep_sequence

    if not 1 <= steps < candidates:
        raise ValueError(f"steps must lie in 1..{candidates - 1} (fewer than the {candidates} candidates), "
                         f"got {steps}")
    noise = torch.randn((batch, *image_shape), generator=torch.Generator().manual_seed(seed)).to(device)
    trajectory = teacher_trajectory(network, process, noise, candidates, class_labels)
    cost = jump_costs(trajectory, process.schedule.alpha_bar.double())
    path, total = cheapest_path(cost, steps)
    node_of = {t: k for k, t in enumerate(trajectory.timesteps)}
    linspace = timestep_sequence(process.num_steps, steps).tolist()
    linspace_cost = None
    if all(t in node_of for t in linspace):
        nodes = [node_of[t] for t in linspace] + [len(trajectory.timesteps)]
        linspace_cost = sum(float(cost[a, b]) for a, b in zip(nodes[:-1], nodes[1:]))
    return SearchedGrid([trajectory.timesteps[k] for k in path], total, linspace_cost)
