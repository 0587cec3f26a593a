"""The committed benchmark results (``benchmarks/*.json``, shipped with the package as ``lora_lab.benchmarks``):
finding them, and the tables the lessons and the GPU memory check read from them. Made by ``python -m lora_lab.bench``
(:mod:`lora_lab.experiments.bench`); kept apart from it because reading results needs none of the machinery that
measures them.
"""
from __future__ import annotations

import json

from ..utils.machine import checkout_root

__all__ = ["committed_results", "summary_table", "ratios"]


def committed_results() -> list[tuple[str, dict]]:
    """``(file name, result)`` for every committed benchmark JSON: the checkout's ``benchmarks/`` folder,
    else the copy that ships inside the installed package (``lora_lab.benchmarks``, e.g. on Colab). Other
    results kept there (the bf16 quality check, the claims) have no ``results`` table and are left out."""
    root = checkout_root()
    repo = root / "benchmarks" if root else None
    if repo is not None and repo.is_dir():
        files = sorted(repo.glob("*.json"))
    else:
        from importlib.resources import files as package_files

        try:
            files = sorted((p for p in package_files("lora_lab.benchmarks").iterdir() if p.name.endswith(".json")),
                           key=lambda p: p.name)
        except ModuleNotFoundError:
            files = []
    loaded = [(f.name, json.loads(f.read_text())) for f in files]
    return [(name, res) for name, res in loaded if isinstance(res, dict) and "results" in res]


def summary_table(result: dict):
    """The main table: one row per shape and method in the run's default configuration (its first row's
    padding and precision, no compile), the ablations left out."""
    import pandas as pd

    df = pd.DataFrame(result["results"])
    base = df[(df.padding == df.padding.iloc[0]) & (~df["compile"]) & (df.precision == df.precision.iloc[0])]
    cols = ["shape", "method", "step_ms_median", "tokens_per_s", "peak_mem_mb", "params_trainable",
            "optimizer_state_mb", "checkpoint_mb", "achieved_tflops"] + (["mfu"] if "mfu" in df else [])
    return base[cols]


def ratios(result: dict):
    """LoRA-16 / full ratios of step time and peak memory, per shape (default configuration)."""
    t = summary_table(result).set_index(["shape", "method"])
    out = {}
    for shape in t.index.get_level_values(0).unique():
        if (shape, "full") in t.index and (shape, "lora-16") in t.index:
            f, lo = t.loc[(shape, "full")], t.loc[(shape, "lora-16")]
            out[shape] = {"step_time_lora_over_full": lo.step_ms_median / f.step_ms_median,
                          "peak_mem_lora_over_full": lo.peak_mem_mb / f.peak_mem_mb}
    return out
