"""`dream --workers`: local worker processes share the chunks and change no byte of the dataset.

Each test holds the workers' output against an answer they cannot influence: a dream in this one process
(``--workers 1``), the wall clock around the call, or the layout rule written out by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_dream import dream, png_hashes, tiny_run  # noqa: F401 (tiny_run is a fixture)

from dreamdata.dream.workers import Layout, check_workers, choose_layout
from dreamdata.errors import ConfigError


def same_dataset(a: Path, b: Path) -> None:
    """Every PNG's bytes and every dataset.npz array equal."""
    hashes = png_hashes(a)
    assert hashes and hashes == png_hashes(b)
    with np.load(a / "dataset.npz") as x, np.load(b / "dataset.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert np.array_equal(x[key], y[key]), key


@pytest.fixture(scope="module")
def single(tiny_run, tmp_path_factory):  # noqa: F811
    """The reference: the tiny dream in this process (one thread, the test session's)."""
    out = tmp_path_factory.mktemp("single") / "set"
    assert dream(tiny_run[0], out, "--workers", "1") == 0
    return out


def test_two_workers_dream_the_same_bytes_and_record_their_layout(tiny_run, single, tmp_path,  # noqa: F811
                                                                  capfd):
    """... and a finished run prints no worker traceback (capfd sees the workers' own stderr: a worker stopped
    while it flushed its report used to print a KeyboardInterrupt)."""
    out = tmp_path / "two"
    started = time.perf_counter()
    assert dream(tiny_run[0], out, "--workers", "2") == 0
    wall = time.perf_counter() - started
    same_dataset(out, single)
    manifest = json.loads((out / "manifest.json").read_text())
    dreaming = manifest["dreaming"]
    # 5 per class x 3 classes in chunks of 4: 4 chunks, 2 per worker; the session's budget is one thread
    assert {key: dreaming[key] for key in ("images", "processes", "threads", "layout")} == {
        "images": 15, "processes": 2, "threads": 1, "layout": "2 processes x 1 thread"}
    assert 0 < dreaming["seconds"] <= wall
    # both are kept to 3 decimals: seconds off by <= 5e-4 moves 15/s by <= 15/s^2 * 5e-4, the rate's own rounding 5e-4
    seconds = dreaming["seconds"]
    rounding = 5e-4 + 15 / (seconds - 5e-4) ** 2 * 5e-4
    assert dreaming["images_per_second"] == pytest.approx(15 / seconds, abs=rounding)
    printed = capfd.readouterr()
    assert f"15 images in {dreaming['seconds']:.1f} s = " in printed.out
    assert "Traceback" not in printed.err and "KeyboardInterrupt" not in printed.err
    reference = json.loads((single / "manifest.json").read_text())["dreaming"]
    assert (reference["processes"], reference["threads"], reference["images"]) == (1, 1, 15)


def test_a_resumed_worker_dream_gives_the_same_bytes(tiny_run, single, tmp_path):  # noqa: F811
    out = tmp_path / "parts"
    assert dream(tiny_run[0], out, "--workers", "2", "--max-chunks", "1") == 0  # one chunk per worker
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["dreaming"]["images"] == 8
    assert sorted(p.name for p in (out / ".chunks").iterdir()) == ["chunk-000000.npz", "chunk-000001.npz"]
    # the two missing chunks are dealt one to each worker again, whatever their numbers
    assert dream(tiny_run[0], out, "--workers", "2") == 0
    same_dataset(out, single)
    assert json.loads((out / "manifest.json").read_text())["dreaming"]["images"] == 7  # 4 + the last 3
    # a set dreamed by one process resumes with workers, and the other way round
    mixed = tmp_path / "mixed"
    assert dream(tiny_run[0], mixed, "--workers", "1", "--max-chunks", "1") == 0
    assert dream(tiny_run[0], mixed, "--workers", "2", "--max-chunks", "1") == 0
    assert dream(tiny_run[0], mixed, "--workers", "1") == 0
    same_dataset(mixed, single)


def test_a_failing_worker_stops_the_run_with_one_line_and_the_rest_resumes(tiny_run, single, tmp_path,  # noqa: F811
                                                                           capfd):
    out = tmp_path / "failing"
    assert dream(tiny_run[0], out, "--workers", "1", "--max-chunks", "1") == 0
    (out / ".chunks" / "chunk-000002.npz").mkdir()  # a directory where a chunk file goes: its write fails
    capfd.readouterr()
    assert dream(tiny_run[0], out, "--workers", "2") == 2
    last = capfd.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("dreamdata dream: error: dream worker 2 of 2: IsADirectoryError"), last
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written
    assert json.loads((out / "manifest.json").read_text())["status"] == "incomplete"
    (out / ".chunks" / "chunk-000002.npz").rmdir()
    assert dream(tiny_run[0], out, "--workers", "2") == 0
    same_dataset(out, single)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_bad_workers_values_are_a_one_line_error(tiny_run, tmp_path, capsys, value):  # noqa: F811
    assert dream(tiny_run[0], tmp_path / "bad", f"--workers={value}") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("dreamdata dream: error: --workers: expected auto or a positive number of worker processes, "
                   f"got {value!r}")
    assert not (tmp_path / "bad").exists()


def test_the_layout_rule():
    # auto: one process per thread of the budget, no more than the chunks left, threads split among them
    assert choose_layout(None, "cpu", pending_chunks=12, threads=2) == Layout(2, 1)
    assert choose_layout(None, "cpu", pending_chunks=12, threads=4) == Layout(4, 1)
    assert choose_layout(None, "cpu", pending_chunks=1, threads=2) == Layout(1, 2)
    assert choose_layout(None, "cpu", pending_chunks=3, threads=4) == Layout(3, 1)
    assert choose_layout(None, "cpu", pending_chunks=12, threads=1) == Layout(1, 1)
    assert choose_layout(None, "cpu", pending_chunks=0, threads=2) == Layout(1, 2)
    # explicit N: N processes (capped by the chunks left), the budget split among them
    assert choose_layout(1, "cpu", pending_chunks=12, threads=2) == Layout(1, 2)
    assert choose_layout(2, "cpu", pending_chunks=12, threads=4) == Layout(2, 2)
    assert choose_layout(3, "cpu", pending_chunks=2, threads=1) == Layout(2, 1)
    # a GPU and torchrun ranks: one process each
    assert choose_layout(None, "cuda", pending_chunks=12, threads=2) == Layout(1, 2)
    assert choose_layout(None, "cpu", pending_chunks=12, world_size=2, threads=1) == Layout(2, 1)
    with pytest.raises(ConfigError, match="--workers 2: dreaming on cuda uses one process"):
        check_workers(2, "cuda")
    with pytest.raises(ConfigError, match="under torchrun"):
        check_workers(2, "cpu", world_size=2)
    assert Layout(1, 1).describe() == "1 process x 1 thread"


# -- signals, in a separate process group as a terminal would send them --------------------------------


SIGNALLED_PER_CLASS = 30  # 90 one-image chunks: ~3 s on an idle 2-core box after the first one


def _as_in_a_terminal() -> None:
    """SIGINT handled as a terminal's foreground job has it: a suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(run: Path, out: Path) -> subprocess.Popen:
    """A dream of 90 one-image chunks with 2 workers, long enough to be caught midway."""
    command = [sys.executable, "-m", "dreamdata", "dream", str(run), "--per-class", str(SIGNALLED_PER_CLASS),
               "--out", str(out),
               "--steps", "20", "--chunk", "1", "--batch", "1", "--device", "cpu", "--workers", "2",
               "--format", "npz"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=_as_in_a_terminal)


def _wait_for_a_chunk(process: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 120
    while not (out / ".chunks").is_dir() or not any((out / ".chunks").glob("chunk-*.npz")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no chunk within 120 s"
        time.sleep(0.05)


def _workers_of(pid: int) -> list[int]:
    """The spawned worker processes among ``pid``'s children (not multiprocessing's resource tracker)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
            children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # an exited child its new parent has not reaped yet is no worker


def _wait_for_workers(process: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 120
    while len(workers := _workers_of(process.pid)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    return workers


def _chunks(out: Path) -> set[str]:
    return {p.name for p in (out / ".chunks").glob("chunk-*.npz")}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the workers through /proc")
def test_ctrl_c_and_a_killed_worker_stop_every_worker_and_the_set_resumes(tiny_run, tmp_path):  # noqa: F811
    run = tiny_run[0]
    out = tmp_path / "signalled"
    process = _start(run, out)
    workers = _wait_for_workers(process)
    _wait_for_a_chunk(process, out)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("dreamdata dream: interrupted; the chunks already written")
    assert not [pid for pid in workers if _alive(pid)]
    written = _chunks(out)
    assert 0 < len(written) < 3 * SIGNALLED_PER_CLASS
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    # resumes; SIGINT to the parent alone, then SIGTERM (kill, timeout, a scheduler): it stops the workers itself
    for signalled in (signal.SIGINT, signal.SIGTERM):
        process = _start(run, out)
        workers = _wait_for_workers(process)
        os.kill(process.pid, signalled)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert not [pid for pid in workers if _alive(pid)]
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    process = _start(run, out)  # resumes; then one worker is killed outright
    workers = _wait_for_workers(process)
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dreamdata dream: error: dream worker ") and last.endswith(
        "died (killed by SIGKILL); the chunks written so far are kept, re-run the same command to finish"), last
    assert not [pid for pid in workers if _alive(pid)]  # the other worker was stopped too

    process = _start(run, out)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    reference = tmp_path / "reference"
    assert main_dream(run, reference) == 0
    with np.load(out / "dataset.npz") as x, np.load(reference / "dataset.npz") as y:
        for key in x.files:
            assert np.array_equal(x[key], y[key]), key


def main_dream(run: Path, out: Path) -> int:
    """The signalled dream's arguments, in this process with one worker."""
    from dreamdata.cli import main

    return main(["dream", str(run), "--per-class", str(SIGNALLED_PER_CLASS), "--out", str(out), "--steps", "20",
                 "--chunk", "1",
                 "--batch", "1", "--device", "cpu", "--workers", "1", "--format", "npz"])
