"""GPU slot leases (fake GPU lists, contending threads and processes) and the CPU thread share."""

import multiprocessing
import os
import random
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra.types import RunMode
from omegaconf import OmegaConf

from hdmap_train import devices
from hdmap_train.devices import JOBLIB_LAUNCHER, GpuSlots, cpu_threads, gpu_lease, gpu_slots, job_devices, visible_gpus
from hdmap_train.errors import HdmapError
from helpers.config import compose_cfg

FAKE_GPUS = ["0", "1", "2"]


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts like a new worker process: no GPU list recorded, no slot pinned, env restored."""
    monkeypatch.setattr(devices, "_process_gpus", None)
    monkeypatch.setattr(devices, "_pinned_gpus", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def hold(slots: GpuSlots, holders: Path, rng: random.Random, jobs: int, capacity: int) -> None:
    """Run `jobs` fake jobs of uneven length; each takes one of `capacity` places on each of its GPUs, failing if none is free."""
    for _ in range(jobs):
        with slots.lease() as (_, gpus):
            markers = [claim_place(holders, gpu, capacity) for gpu in gpus]
            with (holders.parent / "log").open("a") as log:
                log.write("+".join(gpus) + f"@{max(place for place, _ in markers)}\n")
            time.sleep(rng.choice([0.0, 0.01, 0.05, 0.12]))
            for _, marker in markers:
                marker.unlink()


def claim_place(holders: Path, gpu: str, capacity: int) -> tuple[int, Path]:
    """Mark one more job on `gpu`: the first free of its `capacity` places (place index, marker file)."""
    for place in range(capacity):
        marker = holders / f"gpu{gpu}-{place}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        return place + 1, marker
    raise RuntimeError(f"more than {capacity} jobs on GPU {gpu} at once")


def process_worker(lock_dir: Path, holders: Path, seed: int, gpus: list[str], gpus_per_job: int, jobs_per_gpu: int) -> None:
    """A worker process: two threads leasing from the same slots (loky workers are processes; threads add contention)."""
    slots = GpuSlots(lock_dir, gpus, gpus_per_job, jobs_per_gpu, poll_seconds=0.005)
    threads = [threading.Thread(target=hold, args=(slots, holders, random.Random(seed * 10 + i), 4, jobs_per_gpu)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize(("gpus", "gpus_per_job", "jobs_per_gpu", "slots"), [
    (FAKE_GPUS, 1, 1, {"0", "1", "2"}),
    (["0", "1", "2", "3"], 2, 1, {"0+1", "2+3"}),
    (["0", "1"], 1, 3, {"0", "1"}),  # 6 slots: one GPU each, at most 3 jobs on a GPU
])
def test_no_gpu_is_ever_held_by_more_jobs_than_it_has_slots(tmp_path: Path, gpus: list[str], gpus_per_job: int, jobs_per_gpu: int,
                                                            slots: set[str]) -> None:
    holders = tmp_path / "holders"
    holders.mkdir()
    context = multiprocessing.get_context("fork")
    args = [(tmp_path / "locks", holders, seed, gpus, gpus_per_job, jobs_per_gpu) for seed in range(4)]
    workers = [context.Process(target=process_worker, args=worker_args) for worker_args in args]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]  # one job too many on a GPU raises in its thread's process
    leases = [line.split("@") for line in (tmp_path / "log").read_text().split()]
    assert len(leases) == 4 * 2 * 4
    assert {gpus for gpus, _ in leases} <= slots and len({gpus for gpus, _ in leases}) >= 2  # whole slots only, several used
    most_on_one_gpu = max(int(jobs) for _, jobs in leases)
    assert most_on_one_gpu <= jobs_per_gpu and (jobs_per_gpu == 1 or most_on_one_gpu >= 2)  # shared, never beyond k
    assert not list(holders.iterdir())


def test_slots_cut_the_gpu_list_and_reject_impossible_sizes(tmp_path: Path) -> None:
    assert GpuSlots(tmp_path, ["0", "1", "2", "3", "4"], 2).slots == [["0", "1"], ["2", "3"]]
    with pytest.raises(HdmapError, match="gpus_per_job=3 cannot be served by the 2 visible GPU"):
        GpuSlots(tmp_path, ["0", "1"], 3)
    assert GpuSlots(tmp_path, ["0", "1"], 1, 3).slots == [["0"], ["1"], ["0"], ["1"], ["0"], ["1"]]  # spread before shared
    with pytest.raises(HdmapError, match="jobs_per_gpu=2 with gpus_per_job=2: only single-GPU jobs share a GPU"):
        GpuSlots(tmp_path, ["0", "1"], 2, 2)
    with pytest.raises(HdmapError, match="jobs_per_gpu=0 must both be at least 1"):
        GpuSlots(tmp_path, ["0", "1"], 1, 0)


def test_a_pinned_slot_waits_for_that_slot(tmp_path: Path) -> None:
    slots = GpuSlots(tmp_path, FAKE_GPUS, poll_seconds=0.005)
    order = []

    def wait_for_slot_1() -> None:
        with slots.lease(["1"]) as (index, _):
            order.append(index)

    with slots.lease(["1"]) as (index, gpus):
        assert (index, gpus) == (1, ["1"])
        waiter = threading.Thread(target=wait_for_slot_1)
        waiter.start()
        with slots.lease() as (other, _):
            assert other == 0  # slot 1 is taken: a free lease gets another slot
        order.append("released")
    waiter.join(timeout=30)
    assert order == ["released", 1]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-8f2a,5")
    assert visible_gpus() == ["3", "GPU-8f2a", "5"]
    assert gpu_slots(1) == 3 and gpu_slots(2) == 1 and gpu_slots(1, 3) == 9
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and gpu_slots(1) == 1 and gpu_slots(1, 3) == 1  # no GPU: one CPU job
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")
    assert visible_gpus() == ["1"]  # CUDA ignores everything from an invalid entry on
    with pytest.raises(HdmapError, match="gpus_per_job=0"):
        gpu_slots(0)


def test_lease_sets_cuda_visible_devices_and_pins_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    held = GpuSlots(tmp_path, ["4", "5", "6", "7"], 2)
    with held.lease() as (first, _):  # another job holds the first slot
        with gpu_lease(tmp_path, 2) as gpus:
            assert first == 0 and gpus == ["6", "7"] and os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert visible_gpus() == ["4", "5", "6", "7"]  # the worker still knows all GPUs for its next job
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # this job started CUDA on 6,7
    with gpu_lease(tmp_path, 2) as gpus:  # both slots free, but CUDA is bound to slot 1
        assert gpus == ["6", "7"]


def test_a_worker_bound_to_a_shared_gpu_takes_any_of_its_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(devices, "_pinned_gpus", ["1"])  # an earlier job of this worker started CUDA on GPU 1
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    held = GpuSlots(tmp_path, ["0", "1"], 1, 2)
    with held.lease(["1"]) as (first, _), gpu_lease(tmp_path, 1, 2) as gpus:  # slot 1 is taken: slot 3, GPU 1 again
        assert first == 1 and gpus == ["1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_job_devices_shares_a_gpu_between_jobs_per_gpu_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    hydra_cfg = OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": {"_target_": JOBLIB_LAUNCHER, "n_jobs": 6},
                                  "sweep": {"dir": str(tmp_path)}, "job": {"num": 3}})
    threads = torch.get_num_threads()
    others = GpuSlots(tmp_path / devices.LOCK_DIR_NAME, ["0", "1"], 1, 3)
    try:
        with others.lease() as (_, first), others.lease() as (_, second), job_devices(hydra_cfg, 1, 3):
            assert (first, second) == (["0"], ["1"])  # both GPUs busy, each still has free slots
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # the third job shares GPU 0
    finally:
        torch.set_num_threads(threads)


def test_cuda_started_before_any_lease_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(HdmapError, match="CUDA was started in this process before the job leased its GPU"):
        with gpu_lease(tmp_path, 1):
            pass


def test_no_gpus_no_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpu_lease(tmp_path, 1) as gpus:
        assert gpus == [] and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert not tmp_path.joinpath("slot0.lock").exists()


def test_cpu_threads_split_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert [cpu_threads(n) for n in (1, 2, 3, 32)] == [16, 8, 5, 1]
    assert cpu_threads(-1) == 1 and cpu_threads(-9) == 2  # joblib: -1 = one job per CPU, -9 = 8 jobs


def test_gpus_launcher_preset_runs_one_job_per_gpu_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    cfg = compose_cfg(["hydra/launcher=gpus", "gpus_per_job=2"], tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == devices.JOBLIB_LAUNCHER and launcher["n_jobs"] == 2 and launcher["batch_size"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    cfg = compose_cfg(["hydra/launcher=gpus", "jobs_per_gpu=3"], tmp_path)
    assert cfg.jobs_per_gpu == 3 and cfg.hydra.launcher.n_jobs == 6
    cfg = compose_cfg(["hydra/launcher=gpus", "gpus_per_job=2", "jobs_per_gpu=2"], tmp_path)
    with pytest.raises(Exception, match="only single-GPU jobs share a GPU"):
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
