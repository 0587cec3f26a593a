"""Will it fit on the GPU (issue 25 §3): the estimate reproduces the committed measurement at its own batch, grows
with the batch, and a fine-tune that cannot fit a 15 GB T4 is refused before training, naming what would fit."""
import pytest

from lora_lab.experiments.gpu_memory import GPUMemoryError, check_gpu_memory, estimate_mib, measured_step

T4 = 15 * 2**30  # Colab's T4 reports 15 GB


def test_the_estimate_is_the_measurement_at_its_batch_and_grows_with_the_batch():
    row = measured_step("gpt2", "lora", rank=16)
    assert row is not None and row["batch_size"] == 8 and "H100" in row["device"]
    assert estimate_mib("gpt2", "lora", 8) == pytest.approx(row["peak_mem_mb"])
    assert estimate_mib("gpt2", "lora", 8) < estimate_mib("gpt2", "lora", 16) < 2 * estimate_mib("gpt2", "lora", 8)
    assert estimate_mib("gpt2", "lora", 8) < estimate_mib("gpt2", "full", 8)  # gradients and AdamW state
    assert estimate_mib("all-MiniLM-L6-v2", "lora", 8) is None and estimate_mib("gpt2", "lora", 8, rank=4) is None


def test_what_fits_a_t4_is_said_and_what_does_not_is_refused_naming_what_would(capsys):
    assert check_gpu_memory("gpt2", "lora", 8, "cpu", total_bytes=T4) == pytest.approx(estimate_mib("gpt2", "lora", 8))
    assert "GPU memory: about 1.0 GiB of this GPU's 15.0 GiB" in capsys.readouterr().out
    with pytest.raises(GPUMemoryError, match="gpt2-xl full at batch 8 needs about 29.0 GiB.*model 'gpt2-medium' or "
                                             "method 'lora'"):
        check_gpu_memory("gpt2-xl", "full", 8, "cpu", total_bytes=T4)
    with pytest.raises(GPUMemoryError, match="Use batch_size=4 or model 'gpt2-medium'"):
        check_gpu_memory("gpt2-large", "full", 8, "cpu", total_bytes=T4)
    assert check_gpu_memory("gpt2-xl", "lora", 8, "cpu", total_bytes=T4) < 15 * 1024  # LoRA on GPT-2 XL fits a T4
    capsys.readouterr()
    assert check_gpu_memory("all-MiniLM-L6-v2", "lora", 8, "cpu", total_bytes=T4) is None
    assert "no committed measurement for all-MiniLM-L6-v2" in capsys.readouterr().out


def test_on_a_cpu_nothing_is_checked_or_printed(capsys):
    assert check_gpu_memory("gpt2-xl", "full", 64, "cpu") is None and capsys.readouterr().out == ""
