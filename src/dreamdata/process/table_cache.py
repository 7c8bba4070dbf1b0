"""Per-timestep tables next to the images they scale: cached device/dtype copies and the ``values[t]`` gather.

A process keeps each table of per-index values (its schedule, :class:`~dreamdata.process.schedules.ScheduleTensors`;
EDM's coefficients, :class:`~dreamdata.process.edm.EDMTables`) once, in float64 on the CPU. Whenever it needs
those values next to an image ``x`` it takes them from a :class:`TableCache` of copies keyed by
``(device, dtype)``, built on first use - so one process object serves CPU and GPU tensors without a
``.to(device)`` call. :meth:`TableCache.at` uses float32 copies, except float64 ones when ``x`` itself is
float64 (useful for exact checks); results keep ``x``'s dtype unless ``x`` is half precision, in which case
torch's type promotion returns float32.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import torch

__all__ = ["TableCache", "extract"]


class _Movable(Protocol):
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "_Movable": ...


Tables = TypeVar("Tables", bound=_Movable)


def extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gather ``values[t]`` and shape it ``[B, 1, ..., 1]`` (``ndim`` dims) to broadcast against ``[B, ...]``.

    A 0-dim ``t`` (one timestep for the whole batch) gives ``[1, ..., 1]``.
    """
    picked = values[t]
    batch = picked.shape[0] if picked.ndim > 0 else 1
    return picked.reshape(batch, *([1] * (ndim - 1)))


class TableCache(Generic[Tables]):
    """Copies of ``master`` (a named collection of ``[T]`` tensors with ``.to(device=, dtype=)``) per device
    and dtype, made on first use."""

    def __init__(self, master: Tables) -> None:
        self.master = master
        self._copies: dict[tuple[torch.device, torch.dtype], Tables] = {}

    def on(self, device: torch.device | str, dtype: torch.dtype) -> Tables:
        """``master`` on ``device`` in ``dtype`` (cached)."""
        key = (torch.device(device), dtype)
        if key not in self._copies:
            self._copies[key] = self.master.to(device=key[0], dtype=dtype)
        return self._copies[key]

    def at(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``master.<name>[t]`` on ``x``'s device, float64 if ``x`` is else float32, shaped to broadcast
        against ``x``."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        values = getattr(self.on(x.device, dtype), name)
        return extract(values, torch.as_tensor(t, device=x.device), x.ndim)
