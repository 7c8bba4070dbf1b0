"""Keep every core busy while dreaming: local worker processes that share the chunks.

A CPU can dream in two layouts:

* **threads** - one process whose PyTorch intra-op thread pool spans the cores; every convolution is
  split among the threads, which then wait for each other at every op of every sampler step;
* **processes** - one process per core with one thread each, each dreaming its own share of the chunks;
  nothing is waited for until the last chunk.

Measured on this project's 2-core CPU (``benchmarks/dream_layout.py --per-class 20 --chunk 100 --batch 100
--repeats 3``: the demo UNet, DDIM 25 steps, guidance 1.5, 200 images a run, median of 3; BENCHMARKS.md,
*Dreaming throughput*), while another job (a study) kept both cores busy:

======================  ========  ====================================================
layout                  images/s  CPU per core used
======================  ========  ====================================================
1 process x 2 threads   1.53      0.50 (torch's default: what ``dream`` did before)
2 processes x 1 thread  4.05      0.50 (``auto``)
1 process x 1 thread    4.40      0.99
======================  ========  ====================================================

The threads of one process lose most (2.6x slower than two processes): at every op each waits for the
other, so whichever thread the scheduler has put off holds both up. Two processes never wait for each
other; with the other job taking about a core they shared the one left and came within 8% of one thread
alone (the workers' start-up, ~3 s, is in their wall time); on an idle CPU each would have a core of its
own (not measured: the box was never idle during this work). Processes are never far from the best layout
measured and threads are far from it, so the rule ``auto`` applies is: **on a CPU, one process per thread of
the caller's thread budget** (``torch.get_num_threads()``: all cores by default; ``OMP_NUM_THREADS``,
``torch.set_num_threads`` or a study's ``num_threads`` lower it), **no more processes than chunks left to
dream**, and the threads split evenly among them (a last single chunk is dreamed by one process with every
thread). A budget of one thread, one chunk, a GPU (one device is already kept busy by one process; use
``torchrun`` for more) or a ``torchrun`` rank (already one process of many) dreams in the calling process.
``--workers N`` asks for N processes instead.

Why spawned processes (:mod:`multiprocessing` with the ``spawn`` start method), rather than ``fork``,
Python threads or re-running the CLI: a forked child inherits a parent whose OpenMP pool may already be
running, which can deadlock, and its thread count is fixed before it could be set; spawn starts clean
interpreters that set their thread count before their first op, on Linux, macOS and Windows alike.
Python threads would share one network (``generate`` switches its eval/train mode) and the process-wide
thread count of the caller. Subprocesses of the CLI would hand back only an exit code; a worker here sends
its error back to the parent, which owns the manifest and the assembly. Nothing but small, picklable
arguments crosses: each worker loads the checkpoint itself and checks its SHA-256 against the spec.

Which worker dreams what is decided once, by the parent: the missing chunks, dealt round-robin
(:func:`dreamdata.dream.writer.assigned_chunks`, the same split ``torchrun`` ranks use). A chunk's images
depend only on the spec, not on who dreams them, so the dataset is byte-identical whatever the layout
(tests/test_dream_workers.py checks it).

A failing or killed worker, or Ctrl-C, stops every worker; the chunk files already written are complete
(each is written atomically) and a re-run of the same command dreams only the missing ones.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dreamdata.errors import ConfigError, DreamdataError

POLL_SECONDS = 0.5
STOP_SECONDS = 10.0  # how long a terminated worker may take to exit before it is killed


@dataclass(frozen=True)
class Layout:
    """How a dream run uses the CPU: ``processes`` processes with ``threads`` intra-op threads each."""

    processes: int
    threads: int

    def describe(self) -> str:
        return (f"{self.processes} process{'es' if self.processes > 1 else ''} x "
                f"{self.threads} thread{'s' if self.threads > 1 else ''}")

    def to_dict(self) -> dict:
        return {"processes": self.processes, "threads": self.threads, "layout": self.describe()}


def parse_workers(value: int | str | None, name: str = "--workers") -> int | None:
    """``auto`` (or None) -> None; a positive integer (or its text) -> that number of processes."""
    if value is None or value == "auto":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}: expected auto or a positive number of worker processes, got {value!r}")
    return int(text)


def check_workers(workers: int | None, device_type: str, world_size: int = 1) -> None:
    """Refuse worker processes where they do not apply: on a GPU, and in a ``torchrun`` rank."""
    if workers is None or workers == 1:
        return
    if device_type != "cpu":
        raise ConfigError(f"--workers {workers}: dreaming on {device_type} uses one process per device (launch "
                          "with torchrun for more GPUs); leave --workers at auto")
    if world_size > 1:
        raise ConfigError(f"--workers {workers}: under torchrun every rank is a process already; leave --workers "
                          "at auto")


def choose_layout(workers: int | None, device_type: str, pending_chunks: int, world_size: int = 1,
                  threads: int | None = None) -> Layout:
    """The layout to dream ``pending_chunks`` chunks with (the rule in the module docstring).

    ``workers`` None is ``auto``; ``threads`` is the thread budget (default ``torch.get_num_threads()``).
    Under ``torchrun`` the layout is the ranks: ``world_size`` processes.
    """
    check_workers(workers, device_type, world_size)
    budget = max(1, threads or torch.get_num_threads())
    if world_size > 1:
        return Layout(world_size, budget)
    if device_type != "cpu":
        return Layout(1, budget)
    processes = max(1, min(budget if workers is None else workers, pending_chunks))
    return Layout(processes, max(1, budget // processes))


def dream_in_processes(spec, out_dir: Path, shares: Sequence[Sequence[int]], threads: int, batch_size: int,
                       max_chunks: int | None = None, poll: Callable[[], None] = lambda: None,
                       **sampler_options) -> None:
    """Dream ``shares[r]`` (chunk numbers) in worker process ``r``, each with ``threads`` threads.

    Returns once every worker is done; ``poll`` is called about every :data:`POLL_SECONDS` meanwhile (a
    progress bar). A worker's error is raised here, prefixed with the worker; a worker that dies without
    one (killed, out of memory) is a :class:`DreamdataError`. On any of these, or on KeyboardInterrupt,
    the other workers are stopped before the exception leaves.
    """
    context = multiprocessing.get_context("spawn")
    # SIGTERM (kill, timeout, a batch scheduler's stop) would end this process without its finally, leaving the
    # workers dreaming on as orphans: while they run it unwinds like Ctrl-C, so they are stopped below
    previous_sigterm = _raise_keyboard_interrupt_on_sigterm()
    messages = context.Queue()
    workers = [context.Process(target=_worker, name=f"dreamdata-dream-worker-{rank}", daemon=True,
                               args=(rank, threads, spec, str(out_dir), list(share), batch_size, max_chunks,
                                     sampler_options, messages))
               for rank, share in enumerate(shares)]
    try:
        for worker in workers:
            worker.start()
        _wait(workers, messages, poll)
        for worker in workers:  # each has reported and is exiting: a SIGTERM now would land in its queue's
            worker.join(STOP_SECONDS)  # flush at exit and print a spurious KeyboardInterrupt traceback
    finally:
        _stop(workers)
        messages.close()
        messages.join_thread()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_keyboard_interrupt_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt in this (main) thread; returns the handler to restore, or None
    where signals cannot be set (a thread other than the main one)."""
    def interrupted(signum, frame) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupted)
    except ValueError:  # not the main thread: leave SIGTERM alone
        return None


def _wait(workers, messages, poll: Callable[[], None]) -> None:
    finished: set[int] = set()
    count = len(workers)
    while len(finished) < count:
        try:
            rank, error = messages.get(timeout=POLL_SECONDS)
        except queue.Empty:
            poll()
            for rank, worker in enumerate(workers):
                # a worker always reports before exiting normally; a non-zero exit without a report
                # (SIGKILL, out of memory, a crash in native code) is a death
                if rank not in finished and worker.exitcode not in (None, 0):
                    raise DreamdataError(f"dream worker {rank + 1} of {count} died ({_describe_exit(worker.exitcode)})"
                                         f"; the chunks written so far are kept, re-run the same command to finish")
            continue
        if error is not None:
            raise _prefixed(error, f"dream worker {rank + 1} of {count}")
        finished.add(rank)
    poll()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _prefixed(error: DreamdataError, who: str) -> DreamdataError:
    """``error`` with ``who`` in front of its message, of the same class where it allows (so a caller
    catching e.g. NonFiniteSamplesError sees it as from a single process)."""
    message = f"{who}: {error}"
    try:
        return type(error)(message)
    except Exception:  # a subclass with another constructor
        return DreamdataError(message)


def _stop(workers) -> None:
    """Terminate the workers still running (SIGTERM, which a worker turns into KeyboardInterrupt so that it
    unwinds: a chunk it was writing leaves no temporary file), then kill those that have not exited after
    :data:`STOP_SECONDS`."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        if worker.pid is None:  # never started
            continue
        worker.join(STOP_SECONDS)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _interrupted(signum, frame) -> None:
    """A worker's SIGTERM and SIGINT: raise KeyboardInterrupt once, and ignore the signals that follow (Ctrl-C
    reaches a worker and then the parent's stop does), so a second one cannot cut the unwinding short - which
    is where a chunk being written removes its temporary file."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker(rank: int, threads: int, spec, out_dir: str, chunks: list[int], batch_size: int,
            max_chunks: int | None, sampler_options: dict, messages) -> None:
    """One worker process: load the spec's checkpoint, dream ``chunks``, report ``(rank, error or None)``."""
    error: DreamdataError | None = None
    signal.signal(signal.SIGTERM, _interrupted)  # the parent's stop (_stop) unwinds like Ctrl-C
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a parent that ignores Ctrl-C: so do its workers
        signal.signal(signal.SIGINT, _interrupted)
    try:
        torch.set_num_threads(threads)
        from dreamdata.dream.manifest import file_sha256
        from dreamdata.dream.writer import dream_chunks
        from dreamdata.errors import CheckpointError
        from dreamdata.training.pretrained import load_trained

        if file_sha256(spec.checkpoint) != spec.checkpoint_sha256:
            raise CheckpointError(f"{spec.checkpoint}: changed since the dream started (its SHA-256 differs)")
        model = load_trained(spec.checkpoint, use_ema=spec.weights == "ema", device="cpu")
        if spec.autoguide_checkpoint is not None:
            from dreamdata.sampling.from_run import autoguide

            if file_sha256(spec.autoguide_checkpoint) != spec.autoguide_sha256:
                raise CheckpointError(f"{spec.autoguide_checkpoint}: changed since the dream started (its SHA-256 "
                                      "differs)")
            model.network, _ = autoguide(model, spec.autoguide_checkpoint, spec.autoguide_weight,
                                         use_ema=spec.weights == "ema")
        dream_chunks(model, spec, Path(out_dir), chunks, batch_size=batch_size, device=torch.device("cpu"),
                     progress=False, max_chunks=max_chunks, **sampler_options)
    except DreamdataError as caught:
        error = caught
    except KeyboardInterrupt:
        error = DreamdataError("interrupted")
    except Exception as caught:  # a bug: its traceback goes to stderr, the parent gets one line
        traceback.print_exc()
        error = DreamdataError(f"{type(caught).__name__}: {caught} (traceback above)")
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:
            error = DreamdataError(str(error))
    messages.put((rank, error))
