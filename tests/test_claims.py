"""lora_lab.experiments.claims and measures: the measures of notebook 10 on matrices whose answer is known, and
the resumable sweep at smoke size (tiny random GPT-2, a few steps)."""
import dataclasses
import json

import pandas as pd
import pytest
import torch

from lora_lab.experiments import claims as C
from lora_lab.experiments import measures


def _cols(d, idx):
    """A (d, len(idx)) matrix whose columns are the unit vectors e_i, scaled by 1, 2, 3... (the last is largest)."""
    M = torch.zeros(d, len(idx))
    for c, i in enumerate(idx):
        M[i, c] = c + 1.0
    return M


# --- subspace similarity (Hu et al. 2021, section 7.2) -----------------------------------------------------------

def test_subspace_similarity_of_a_matrix_with_itself_is_one_everywhere():
    torch.manual_seed(0)
    A = torch.randn(32, 6)
    phi = measures.subspace_similarity(A, A)
    assert phi.shape == (6, 6)
    assert torch.allclose(phi, torch.ones(6, 6, dtype=phi.dtype), atol=1e-10)


def test_subspace_similarity_of_orthogonal_subspaces_is_zero():
    phi = measures.subspace_similarity(_cols(10, [0, 1]), _cols(10, [2, 3, 4]))
    assert phi.shape == (2, 3)
    assert float(phi.abs().max()) < 1e-12


def test_subspace_similarity_orders_directions_by_singular_value():
    # A2's strongest direction is e1, its weaker one e0; A1 is e0 alone
    A1, A2 = _cols(5, [0]), _cols(5, [0, 1])
    phi = measures.subspace_similarity(A1, A2)
    assert phi[0, 0] == pytest.approx(0.0, abs=1e-12)  # top-1 of A2 is e1, orthogonal to e0
    assert phi[0, 1] == pytest.approx(1.0)  # within the top-2 of A2
    # a direction at 45 degrees shares half its length squared
    B = torch.zeros(5, 1)
    B[0, 0] = B[1, 0] = 1.0
    assert measures.subspace_similarity(A1, B)[0, 0] == pytest.approx(0.5)


def test_subspace_similarity_needs_matching_input_dims():
    with pytest.raises(ValueError, match="same d_in"):
        measures.subspace_similarity(torch.randn(8, 2), torch.randn(9, 2))


def test_random_phi_is_the_average_over_random_subspaces():
    g = torch.Generator().manual_seed(1)
    d, i, j = 64, 2, 8
    sim = measures.subspace_similarity
    vals = [float(sim(torch.randn(d, i, generator=g), torch.randn(d, j, generator=g))[i - 1, j - 1])
            for _ in range(300)]
    assert sum(vals) / len(vals) == pytest.approx(measures.random_phi(i, j, d), abs=0.01)
    assert measures.random_phi(i, j, d) == 8 / 64


# --- how much of full fine-tuning's change LoRA's directions explain ----------------------------------------------

def test_explained_share_of_a_matrix_by_itself_is_its_top_energy_share():
    torch.manual_seed(0)
    D = torch.randn(12, 20)
    ks = [1, 3, 12]
    assert measures.explained_share(D, D, ks) == pytest.approx(measures.top_energy_share(D, ks))
    assert measures.top_energy_share(D, [12])[0] == pytest.approx(1.0)  # all of it at full rank
    assert measures.top_energy_share(D, [1])[0] < 1.0


def test_explained_share_is_zero_for_an_update_that_reads_other_inputs():
    D = torch.zeros(6, 8)
    D[:, :4] = torch.randn(6, 4)  # full fine-tuning's change reads inputs 0-3
    L = torch.zeros(6, 8)
    L[:, 4:] = torch.randn(6, 4)  # LoRA's reads inputs 4-7
    assert measures.explained_share(D, L, [1, 4]) == pytest.approx([0.0, 0.0], abs=1e-12)


# --- forgetting ---------------------------------------------------------------------------------------------------

def test_forgetting_of_an_unchanged_model_is_exactly_no_change():
    torch.manual_seed(0)
    E = torch.randn(30, 16)
    f = measures.forgetting(E, E.clone(), k=5)
    assert f["nn_overlap"] == 1.0
    assert f["cos_mean"] == pytest.approx(1.0, abs=1e-12) and f["cos_min"] == pytest.approx(1.0, abs=1e-12)


def test_forgetting_sees_moved_embeddings():
    torch.manual_seed(0)
    E = torch.randn(40, 16)
    moved = E[torch.randperm(40)]  # every text now has another text's embedding
    f = measures.forgetting(E, moved, k=5)
    assert f["nn_overlap"] < 0.5 and f["cos_mean"] < 0.5
    # a uniform rescaling changes no cosine and no neighbour
    assert measures.forgetting(E, 3 * E)["nn_overlap"] == 1.0


def test_neighbour_overlap_checks_its_inputs():
    with pytest.raises(ValueError, match="n > k"):
        measures.neighbour_overlap(torch.randn(5, 4), torch.randn(5, 4), k=5)


def test_perplexity_is_unchanged_for_an_unchanged_model_and_moves_when_the_body_changes(tiny_model):
    ids = list(range(100, 400))
    base = measures.perplexity(tiny_model, ids, window=64)
    assert measures.perplexity(tiny_model, ids, window=64) == base
    clf = tiny_model.to_classifier(2)  # the LM head is gone, the tied embedding is not
    assert measures.perplexity(clf, ids, window=64) == pytest.approx(base)
    with torch.no_grad():
        clf.transformer.h[0].mlp.c_fc.weight.mul_(3)
    assert measures.perplexity(clf, ids, window=64) != pytest.approx(base)


def test_perplexity_refuses_a_model_that_is_not_gpt2():
    with pytest.raises(TypeError, match="GPT-2"):
        measures.perplexity(torch.nn.Linear(2, 2), [1, 2, 3])


def test_unrelated_texts_are_fixed_english_sentences():
    texts, source = C.unrelated_texts(200)
    assert len(texts) == 200 and len(set(texts)) == 200
    assert all(25 <= len(t) <= 200 and t.endswith(".") for t in texts)
    assert "standard-library" in source
    assert C.text_sha256(C.unrelated_texts(200)[0]) == C.text_sha256(texts)  # the same sentences every time


# --- the training sets ------------------------------------------------------------------------------------------

def _train_frame(n=40):
    return pd.DataFrame({"text": [f"m{i}" for i in range(2 * n)], "label_id": [0] * n + [1] * n})


def test_train_subset_is_balanced_nested_and_seeded():
    df = _train_frame()
    s8, s16 = C.train_subset(df, 8, seed=1), C.train_subset(df, 16, seed=1)
    assert s8["label_id"].value_counts().to_dict() == {0: 8, 1: 8}
    assert set(s8.index) <= set(s16.index)  # nested
    assert C.train_subset(df, 8, seed=1).index.equals(s8.index)  # same seed, same messages
    assert not C.train_subset(df, 8, seed=2).index.equals(s8.index)
    assert C.train_subset(df, C.FULL, seed=1) is df
    with pytest.raises(ValueError, match="at most 40"):
        C.train_subset(df, 41, seed=1)


def test_plan_steps_gives_small_sets_a_minimum_number_of_steps():
    assert C.plan_steps(16, 8, 3, 100) == (272, 102)  # 16 messages cycled 17 times per epoch
    assert C.plan_steps(1045, 8, 3, 100) == (1045, 390)  # plain epochs already give enough
    with pytest.raises(ValueError, match="one batch"):
        C.plan_steps(4, 8, 3, 100)


def test_repeated_cycles_the_dataset():
    r = C.Repeated([10, 11, 12], 7)
    assert len(r) == 7 and [r[i] for i in range(7)] == [10, 11, 12, 10, 11, 12, 10]
    with pytest.raises(IndexError):
        r[7]
    with pytest.raises(ValueError):
        C.Repeated([1, 2, 3], 2)


# --- the sweep, at smoke size ------------------------------------------------------------------------------------

CFG = C.ClaimsConfig(sizes=(4, C.FULL), seeds=(123,), epochs=1, min_steps=3, batch_size=4, rank=2, big_rank=4,
                     n_texts=20, neighbours=3)


@pytest.mark.needs_data
def test_sweep_is_resumable_deterministic_and_refuses_other_settings(tmp_path):
    from lora_lab.experiments.profiles import get_settings
    S = dataclasses.replace(get_settings("smoke", quiet=True), subset=20)  # a 28-message full split: seconds
    out, work = tmp_path / "c.json", tmp_path / "work"
    r1 = C.run_claims(S, out, work, CFG, log=None, max_runs=2)
    assert [r["key"] for r in r1["runs"]] == ["lora-2|full split|123", "full|full split|123"] and not r1["complete"]
    assert r1["directions"] == []  # part 3 waits for the large-rank LoRA
    r2 = C.run_claims(S, out, work, CFG, log=None)  # resumes: only the missing runs
    keys = [r["key"] for r in r2["runs"]]
    assert keys == ["lora-2|full split|123", "full|full split|123", "lora-4|full split|123", "lora-2|4|123",
                    "full|4|123"]
    assert r2["complete"] and len(r2["launches"]) == 2
    assert json.loads(out.read_text())["runs"] == r2["runs"]  # what is returned is what was saved
    # part 3 ran on the three full-split models: one row per layer kind, grids of rank x big_rank
    kinds = {d["layer"] for d in r2["directions"]}
    assert kinds == {"attn (qkv)", "attn-out", "mlp-in", "mlp-out"}
    d = r2["directions"][0]
    assert len(d["phi"]) == 2 and len(d["phi"][0]) == 4 and len(d["explained"]) == 2
    assert all(0 <= e <= c + 1e-6 for e, c in zip(d["explained"], d["ceiling"]))  # Eckart-Young
    # the same seed gives the same numbers
    again = C.run_claims(S, tmp_path / "d.json", tmp_path / "w2", CFG, log=None, max_runs=1)["runs"][0]
    first = dict(r2["runs"][0])
    again.pop("train_s"), first.pop("train_s")
    assert again == first
    # a run with other settings must not be pooled with these
    with pytest.raises(ValueError, match="not be comparable"):
        C.run_claims(S, out, work, C.ClaimsConfig(**{**CFG.__dict__, "min_steps": 5}), log=None)
    # "auto" was stored as the dtype it resolved to, and a launch that trains in another one is refused
    saved = json.loads(out.read_text())["config"]["precision"]
    assert saved in ("fp32", "bf16") and {r["precision"] for r in r2["runs"]} == {saved}
    other = "bf16" if saved == "fp32" else "fp32"
    with pytest.raises(ValueError, match="not be comparable"):
        C.run_claims(S, out, work, C.ClaimsConfig(**{**CFG.__dict__, "precision": other}), log=None)
    frame = C.runs_frame(r2)
    assert frame.loc[frame.per_class == C.FULL, "size"].iloc[0] == r2["runs"][0]["n_train"]


def test_claims_results_are_not_read_as_benchmarks():
    from lora_lab.experiments.bench import committed_results

    assert C.DEFAULT_RESULTS["offline"].parent.name == "claims"  # a subfolder: benchmarks/*.json does not match it
    assert not any("claims" in name for name, _ in committed_results())


def test_input_directions_keep_their_order():
    # update 1 reads input e0 strongly and e1 weakly; update 2 the other way round
    d1, d2 = torch.zeros(4, 6), torch.zeros(4, 6)
    d1[0, 0], d1[1, 1] = 3.0, 1.0
    d2[0, 1], d2[1, 0] = 3.0, 1.0
    phi = measures.subspace_similarity(C._input_directions(d1, 2), C._input_directions(d2, 2))
    assert phi[0, 0] == pytest.approx(0.0, abs=1e-12)  # the top directions differ
    assert phi[1, 1] == pytest.approx(1.0)  # the same 2-dimensional span


@pytest.mark.needs_data
def test_initial_A_is_what_finetune_starts_from():
    from lora_lab.experiments.profiles import get_settings, load_backbone, load_splits
    from lora_lab.experiments.runs import finetune
    from lora_lab.lora import lora_layers

    S = dataclasses.replace(get_settings("smoke", quiet=True), subset=8)
    bb = load_backbone(S, verbose=False)
    (ds,) = bb.datasets(load_splits(S)[0])
    r = finetune(bb, "lora", ds, None, seed=7, epochs=1, batch_size=4, lr=0.0, rank=2, alpha=4)  # lr 0: A stays put
    init = C._initial_A(bb, 7, 2, 4)
    trained = {n: m.lora.A for n, m in lora_layers(r["model"]).items()}
    assert init.keys() == trained.keys()
    assert all(torch.equal(init[n], trained[n]) for n in init)
    assert not torch.equal(C._initial_A(bb, 8, 2, 4)[next(iter(init))], init[next(iter(init))])


def test_compare_pairs_runs_by_seed_and_uses_the_paired_rule():
    import pandas as pd

    from lora_lab.experiments import claims

    rows = []
    for seed, (a16, b16, a32, b32) in zip((1, 2, 3), [(0.50, 0.70, 0.9, 0.2), (0.52, 0.71, 0.1, 0.8),
                                                       (0.49, 0.69, 0.5, 0.5)]):
        for size, a, b in ((16, a16, b16), (32, a32, b32)):
            rows += [{"size": size, "label": "lora-8", "seed": seed, "m": a},
                     {"size": size, "label": "full", "seed": seed, "m": b}]
    t = claims.compare(pd.DataFrame(rows), "m", "lora-8", "full")
    assert t.loc[16, "verdict"] == "full higher" and t.loc[16, "95% high"] < 0  # consistent in every pair
    assert t.loc[32, "verdict"] == "undecided"  # the same means could come from any order: the pairs disagree
    assert t.loc[16, "lora-8 - full"] == pytest.approx(-0.1967, abs=1e-3) and (t.seeds == 3).all()
    # with a minimum effect of 0.5 the whole interval (about -0.22 to -0.17) lies within it: no difference that counts
    assert claims.compare(pd.DataFrame(rows), "m", "lora-8", "full", min_effect=0.5).loc[16, "verdict"] == "equivalent"
