"""metrics.json `efficiency` (parameters, inference rate, peak memory, memory bank) and the trainer=gpu path on CPU."""

import json
import mmap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from hdmap_train.efficiency import PeakMemory, StepTimer, parameter_counts, stored_features
from hdmap_train.provenance import cpu_model
from hdmap_train.train import run
from hdmap_train.weights import write_random_weights
from helpers.config import PRETRAINED, compose_cfg
from helpers.runs import assert_complete_record, tiny_run_cfg

MIXED = {"dinomaly", "reverse_distillation", "stfpm"}  # trainer=gpu runs these in 16-mixed, every other model in 32-true
MODELS = sorted(path.stem for path in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_trainable_parameters_are_those_an_optimiser_updates() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD([*model[0].parameters(), *model[1].parameters()], lr=0.1)  # model[2]: no optimiser
    assert parameter_counts(model, [optimizer]) == {"parameters_total": 16 + 10 + 3, "parameters_trainable": 10}
    assert parameter_counts(model, [])["parameters_trainable"] == 0  # memory-bank models have no optimiser


def test_stored_features_of_a_memory_bank_and_a_gaussian() -> None:
    patchcore = SimpleNamespace(model=SimpleNamespace(memory_bank=torch.zeros(7, 5)))
    assert stored_features(patchcore) == {"memory_bank": {"rows": 7, "dims": 5, "bytes": 140, "dtype": "float32"}, "gaussian": None}
    gaussian = SimpleNamespace(mean=torch.zeros(4, 6, dtype=torch.float64), inv_covariance=torch.zeros(6, 4, 4, dtype=torch.float64))
    padim = SimpleNamespace(model=SimpleNamespace(memory_bank=[], gaussian=gaussian))
    assert stored_features(padim)["gaussian"] == {"mean_shape": [4, 6], "inv_covariance_shape": [6, 4, 4], "bytes": 8 * (24 + 96),
                                                  "dtype": "float64"}
    unfitted = SimpleNamespace(model=SimpleNamespace(memory_bank=torch.empty(0)))
    assert stored_features(unfitted) == stored_features(torch.nn.Linear(1, 1)) == {"memory_bank": None, "gaussian": None}


def test_peak_rss_starts_at_the_job() -> None:
    memory = PeakMemory()
    before = memory.read(torch.device("cpu"))
    with mmap.mmap(-1, 64 << 20) as block:  # 64 MiB of fresh pages (malloc could reuse resident freed memory)
        block.write(b"x" * (64 << 20))  # touched: resident
        after = memory.read(torch.device("cpu"))
    assert before["peak_memory_source"] == "max_rss_since_job_start"  # Linux: /proc/self/clear_refs resets the peak
    assert after["peak_memory_bytes"] - before["peak_memory_bytes"] >= 60 << 20 and after["peak_rss_bytes"] == after["peak_memory_bytes"]
    assert PeakMemory().read(torch.device("cpu"))["peak_memory_bytes"] < after["peak_memory_bytes"]  # a new job starts low


def test_step_timer_sums_the_chosen_dataloaders() -> None:
    timer = StepTimer()
    timer.predict_steps = {0: [(1.0, 8)], 1: [(0.5, 8), (0.25, 4)], 2: [(0.25, 4)]}
    assert timer.inference([1, 2]) == {"inference_images": 16, "inference_seconds": 1.0, "inference_images_per_second": 16.0}
    assert timer.inference()["inference_images"] == 24 and StepTimer().inference()["inference_images_per_second"] is None


@pytest.mark.parametrize("model", MODELS)
def test_trainer_gpu_uses_mixed_precision_only_where_the_model_allows_it(model: str, tmp_path: Path) -> None:
    trainer = OmegaConf.to_container(compose_cfg([f"model={model}", "trainer=gpu"], tmp_path).trainer, resolve=True)
    assert trainer["precision"] == ("16-mixed" if model in MIXED else "32-true") and trainer["benchmark"] is True
    assert trainer["accelerator"] == "gpu"
    assert compose_cfg([f"model={model}"], tmp_path).trainer.precision == "32-true"  # trainer=default: fp32 everywhere


@pytest.mark.slow
def test_patchcore_run_records_its_efficiency(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    write_random_weights(PRETRAINED["patchcore"], hf_cache)
    run(tiny_run_cfg("patchcore", tiny_dataset, tmp_path), tmp_path)
    record = assert_complete_record(tmp_path, "patchcore")
    efficiency = json.loads((tmp_path / "metrics.json").read_text())["efficiency"]
    assert efficiency == record["efficiency"]
    assert efficiency["device"] == "cpu" and efficiency["precision"] == "32-true"
    assert efficiency["cpu_threads"] == torch.get_num_threads()  # threads=null: torch's own count, recorded
    assert record["provenance"]["cpu"] == cpu_model() and "gpu" not in record["provenance"]  # a CPU run names no GPU
    assert record["provenance"]["dirty"] in (True, False, None) and set(record["provenance"]) == {"commit", "dirty", "cpu"}
    assert efficiency["parameters_total"] > 0 and efficiency["parameters_trainable"] == 0  # no optimiser
    assert efficiency["inference_images"] == 4 * 24 and efficiency["inference_images_per_second"] > 0  # the test sets, not validation
    assert efficiency["peak_memory_source"] == "max_rss_since_job_start" and efficiency["peak_memory_bytes"] > 50 << 20
    bank = efficiency["memory_bank"]
    # resnet18 layer2+layer3 at 32x96: 4x12 patches of 128+256 dims per image, coreset 10% of 36 images
    assert (bank["rows"], bank["dims"]) == (int(36 * 48 * 0.1), 384) and bank["bytes"] == bank["rows"] * 384 * 4
    assert efficiency["gaussian"] is None


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MIXED))
def test_mixed_precision_models_train_under_autocast_on_a_cpu(model: str, tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    """trainer=gpu with the accelerator switched to CPU: Lightning turns 16-mixed into bf16 autocast, the same code path."""
    write_random_weights(PRETRAINED[model], hf_cache)
    run(tiny_run_cfg(model, tiny_dataset, tmp_path, "trainer=gpu", "trainer.accelerator=cpu"), tmp_path)
    record = assert_complete_record(tmp_path, model)
    assert record["efficiency"]["precision"] == "bf16-mixed" and record["efficiency"]["parameters_trainable"] > 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["dinomaly", "draem"], ids=["mixed", "fp32"])
def test_gpu_run_records_cuda_peak_memory(model: str, tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    if model in PRETRAINED:
        write_random_weights(PRETRAINED[model], hf_cache)
    cfg = compose_cfg([f"model={model}", "trainer=gpu", "trainer.enable_progress_bar=false", f"data.root={tiny_dataset}", "size=tiny"],
                      tmp_path)
    run(cfg, tmp_path)
    efficiency = assert_complete_record(tmp_path, model)["efficiency"]
    assert efficiency["device"].startswith("cuda") and efficiency["precision"] == ("16-mixed" if model in MIXED else "32-true")
    assert efficiency["peak_memory_source"] == "cuda_max_memory_allocated" and efficiency["peak_memory_bytes"] > 0

