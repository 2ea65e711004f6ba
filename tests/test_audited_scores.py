"""The audited scores (analysis.heldout, analysis.beyond_token, analysis.intervals) on
units and routings built by hand, each with an answer stated before the run: one
known-answer test per defect the audit found, and the cases they must not credit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from glassbox.analysis.audit import audit_samples, audited_scores
from glassbox.analysis.batches import suite_batches
from glassbox.analysis.beyond_token import info_with_control, shuffle_within_token
from glassbox.analysis.coverage import coverage
from glassbox.analysis.heldout import Split, pooled_lift, protocol, score_units
from glassbox.analysis.intervals import (
    boot,
    bootstrap_weights,
    decide,
    draws_id,
    interval,
    paired_interval,
    ratio_replicates,
)
from glassbox.archs import Transformer
from glassbox.report import Report
from glassbox.results import PostHocResult, RunResult
from glassbox.training.config import load_config
from glassbox.training.data import DataConfig, build_datasets

N_EX, PER_EX = 200, 20  # examples per split, tokens per example


def side(labels: torch.Tensor, tokens: torch.Tensor) -> Split:
    n = labels.shape[0]
    return Split(tokens, labels.to(torch.int8), torch.arange(n) // PER_EX, n // PER_EX)


def contextual_task(seed: int, n_features: int = 4, rate: float = 0.3):
    """Two splits of binary features that the token (one of 40 ids, independent of
    them) does not predict, each with a positive rate of `rate`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        n = N_EX * PER_EX
        labels = (torch.rand(n, n_features, generator=g) < rate).long()
        tokens = torch.randint(40, (n,), generator=g)
        out.append((labels, tokens))
    return out, g


def noise(n: int, units: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, units, generator=g)


def test_a_unit_equal_to_a_features_negation_gets_full_credit():
    (fit, score), g = contextual_task(0)
    p = protocol(side(*fit), side(*score), ["a", "b", "c", "d"])
    # unit 0 is feature a's negation, unit 1 is feature b itself, the rest noise
    acts = [torch.cat([-lab[:, :1].float(), lab[:, 1:2].float(), noise(len(lab), 6, g)], 1)
            for lab, _ in (fit, score)]  # fmt: skip
    s = score_units(p, *acts)
    assert s.values["features"]["a"] == pytest.approx(
        {"unit": 0, "sign": -1, "threshold": s.values["features"]["a"]["threshold"],
         "f1_fit": 1.0, "f1": 1.0, "f1_matched": 1.0}
    )  # fmt: skip
    assert s.values["features"]["b"]["f1"] == 1.0 and s.values["features"]["b"]["sign"] == 1
    # read with one sign only (the old coverage), the negated unit is not credited
    old = coverage(acts[1][:, :1], score[0][:, :1])
    assert old.coverage < 0.5


def test_pooled_lift_closed_form_and_what_the_mean_of_ratios_does():
    unit = torch.tensor([1.0, 0.5])
    token = torch.tensor([0.9, 0.0])
    mask = torch.tensor([True, True])
    assert float(pooled_lift(unit, token, mask)) == pytest.approx(0.6 / 1.1)
    # the mean of ratios gives the near-lexical feature a weight of 10: 0.75
    ratios = ((unit - token) / (1 - token)).mean()
    assert float(ratios) == pytest.approx(0.75)
    assert math.isnan(float(pooled_lift(unit, token, torch.tensor([False, False]))))


def test_in_sample_optimism_on_pure_noise_units_is_removed_by_the_held_out_protocol():
    (fit, score), g = contextual_task(1, rate=0.05)
    p = protocol(side(*fit), side(*score), list("abcd"))
    acts = [noise(len(lab), 256, g) for lab, _ in (fit, score)]
    s = score_units(p, *acts, matched_units=256)
    token = p.token_summary()
    # chosen and scored on the same tokens, 256 noise units x 2 signs x 16 thresholds
    # read features of 5% positives far better than the token predicts them held out
    assert s.values["coverage_insample"] > token["coverage_heldout_ci"][1] + 0.02
    # held out, they are at the token baseline within the interval
    lo, hi = s.values["lift_pooled_ci"]
    assert lo < 0 < hi
    lo, hi = token["coverage_heldout_ci"]
    assert lo <= s.values["coverage_heldout"] <= hi


def test_adding_random_units_does_not_raise_the_matched_candidate_score():
    (fit, score), g = contextual_task(2, rate=0.05)
    p = protocol(side(*fit), side(*score), list("abcd"))

    def units(n_noise: int):
        # one weakly informative unit per split (feature a plus noise), then noise
        return [torch.cat([lab[:, :1].float() + torch.randn(len(lab), 1, generator=g),
                           noise(len(lab), n_noise, g)], 1) for lab, _ in (fit, score)]  # fmt: skip

    few = score_units(p, *units(7), matched_units=8)
    many = score_units(p, *units(120), matched_units=8)
    # more candidates: in sample the score can only rise (a superset of candidates);
    # at 8 matched candidates it falls, as the informative unit is drawn less often
    assert many.values["coverage_insample"] >= few.values["coverage_insample"]
    assert many.values["coverage_matched"] < few.values["coverage_matched"]
    assert many.values["lift_pooled"] < few.values["lift_pooled"]
    assert many.values["n_candidates"] == few.values["n_candidates"] == 8
    assert many.values["n_subsets"] == 8 and few.values["n_subsets"] == 1


def test_a_lexical_feature_is_kept_out_of_the_headline_and_a_rare_one_is_left_out():
    g = torch.Generator().manual_seed(3)
    sides = []
    for _ in range(2):
        n = N_EX * PER_EX
        tokens = torch.randint(40, (n,), generator=g)
        lexical = (tokens < 10).long()  # a function of the token
        rare = torch.zeros(n, dtype=torch.long)
        rare[:5] = 1  # 5 positives: under MIN_POSITIVES
        ctx = (torch.rand(n, generator=g) < 0.3).long()
        sides.append(side(torch.stack([lexical, rare, ctx], 1), tokens))
    p = protocol(*sides, ["lex", "rare", "ctx"])
    t = p.token_summary()
    assert t["features"]["lex"]["kind"] == "lexical" and t["features"]["lex"]["token_f1"] == 1.0
    assert t["features"]["rare"]["scored"] is False
    assert (t["n_features_scored"], t["n_features_lexical"], t["n_features_left_out"]) == (1, 1, 1)


def routing_task(seed: int, group_of):
    """Tokens of 10 ids; each id belongs to 2 of 4 skills, drawn at random per token:
    H(skill | token) = 1 bit. group_of(token, skill) -> group."""
    g = torch.Generator().manual_seed(seed)
    sides = []
    for _ in range(2):
        n = N_EX * PER_EX
        tokens = torch.randint(10, (n,), generator=g)
        skill = (tokens % 4 + 2 * torch.randint(2, (n,), generator=g)) % 4
        sides.append((tokens, group_of(tokens, skill), skill))
    return sides


def info(sides, seed=0):
    (ft, fg, fl), (st, sg, sl) = sides
    ex = torch.arange(st.numel()) // PER_EX
    return info_with_control(ft, fg, fl, st, sg, sl, ex, N_EX, 4, bootstrap_weights(N_EX), seed)


def test_a_router_that_is_a_function_of_the_token_carries_nothing_beyond_it():
    values, reps = info(routing_task(0, lambda t, s: (7 * t) % 5))
    assert values["info_bits"] == 0.0
    assert values["info_bits_ci"] == [0.0, 0.0]
    assert values["acc_token"] == values["acc_token_group"]
    assert values["shuffled"]["info_bits"] == 0.0  # a shuffle within a token changes nothing


def test_a_router_that_carries_the_skill_gets_the_skills_entropy_given_the_token():
    values, _ = info(routing_task(1, lambda t, s: s))
    # H(skill | token) = 1 bit; the smoothing (1 pseudo-count over ~400 tokens per
    # cell) costs a few thousandths
    assert values["entropy_given_token_bits"] == pytest.approx(1.0, abs=0.02)
    assert values["info_bits"] == pytest.approx(values["entropy_given_token_bits"], abs=0.02)
    assert values["acc_token_group"] == 1.0 and values["acc_token"] < 0.6
    lo, hi = values["info_bits_ci"]
    assert lo <= values["info_bits"] <= hi
    # the within-token shuffle keeps only what the token says: nothing beyond it
    assert abs(values["shuffled"]["info_bits"]) < 0.02


def test_shuffle_within_token_permutes_only_among_a_tokens_occurrences():
    tokens = torch.tensor([0, 1, 0, 1, 0, 2])
    groups = torch.tensor([5, 6, 7, 8, 9, 4])
    out = shuffle_within_token(tokens, groups, seed=3)
    for t in tokens.unique():
        m = tokens == t
        assert sorted(out[m].tolist()) == sorted(groups[m].tolist())


def test_bootstrap_weights_intervals_and_decisions():
    w = bootstrap_weights(50, n_boot=400, seed=0)
    assert w.shape == (400, 50) and bool((w.sum(1) == 50).all())
    assert torch.equal(w, bootstrap_weights(50, n_boot=400, seed=0))  # paired across models
    # a constant per-example ratio has a zero-width interval
    reps = ratio_replicates(torch.full((50,), 3.0), torch.full((50,), 4.0), w)
    assert interval(reps) == pytest.approx([0.75, 0.75])
    # a mean of iid values: the interval holds the mean, about 2 standard errors wide
    x = torch.randn(50, generator=torch.Generator().manual_seed(1)).double()
    lo, hi = interval(ratio_replicates(x, torch.ones(50), w))
    se = float(x.std() / math.sqrt(50))
    assert lo < float(x.mean()) < hi and 2.5 * se < hi - lo < 5.5 * se
    assert decide([0.2, 0.3], [0.0, 0.1]) == "above"
    assert decide([0.0, 0.1], [0.2, 0.3]) == "below"
    assert decide([0.0, 0.25], [0.2, 0.3]) == "same"
    assert decide(None, [0.2, 0.3]) is None


# ------------------------------------------------- the pipeline on tiny models


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory):
    cfg = DataConfig(n_train=2400, n_val=256, n_test=256, n_ood=16,
                     cache_dir=str(tmp_path_factory.mktemp("data")))  # fmt: skip
    return build_datasets(cfg)


TINY = {
    "dense": ["model.ffn.d_ff=64"],
    "moe": ["model.ffn.moe.d_expert=16"],
    "transcoder": ["model.ffn.transcoder.d_latent=128", "model.ffn.transcoder.k=8"],
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_audited_scores_of_every_kind_add_up(small_suite, kind):
    cfg = load_config(f"configs/{kind}.yaml", ["model.d_model=32", "model.n_heads=2",
                                               "model.max_seq_len=64", *TINY[kind]])  # fmt: skip
    mc = dataclasses.replace(
        cfg.model, vocab_size=small_suite.tokenizer.get_vocab_size(), pad_token_id=0
    )
    torch.manual_seed(0)
    model = Transformer(mc).eval()
    fit = suite_batches(small_suite, "val", 128, seed=0)
    score = suite_batches(small_suite, "test", 128, seed=1)
    r = audited_scores(model, small_suite, fit, score, seed=0, matched_units=48)
    s = r["summary"]
    for k in ("lift_pooled", "lift_pooled_all", "coverage_heldout", "coverage_matched"):
        lo, hi = s[f"interp.{k}_ci"]
        assert lo <= s[f"interp.{k}"] <= hi, k
    # the headline is the pooled lift of the features' held-out F1s, recomputed here
    # from the per-feature details of each layer's headline reading
    feats = r["token"]["features"]
    scored = [n for n, f in feats.items() if f["scored"] and f["kind"] == "contextual"]
    lifts = []
    for layer in r["coverage"].values():
        head = next(iter(layer.values()))
        u = torch.tensor([head["features"][n]["f1"] for n in scored])
        t = torch.tensor([feats[n]["token_f1"] for n in scored])
        lifts.append(float((u - t).sum() / (1 - t).sum()))
    assert s["interp.lift_pooled_all"] == pytest.approx(sum(lifts) / len(lifts), abs=1e-6)
    readings = [list(layer) for layer in r["coverage"].values()]
    if kind == "moe":  # read through its hidden units first, its gates second, and routed
        assert readings == [["expert_neuron", "expert"]] * 2
        assert r["coverage"]["0"]["expert_neuron"]["n_candidates"] == 48
        assert r["coverage"]["0"]["expert"]["n_candidates"] == 32  # fewer than 48: all
        assert "interp.info_beyond_token_routed" in s
    else:
        assert "interp.info_beyond_token_routed" not in s
    assert s["interp.n_features_scored"] == len(scored)
    # the scores kinds are told apart on keep their replicates, whose interval is theirs
    boots = ["lift_pooled", "coverage_matched", "info_beyond_token"]
    for k in boots + (["info_beyond_token_routed"] if kind == "moe" else []):
        saved = s[f"interp.{k}_boot"]
        reps = torch.tensor([math.nan if x is None else x for x in saved["replicates"]])
        assert len(reps) == 1000 and interval(reps) == pytest.approx(s[f"interp.{k}_ci"], abs=1e-5)
    assert (
        "interp.lift_pooled_all_boot" not in s and "interp.random_control.lift_pooled_boot" not in s
    )
    # and their controls', kept where the report reads them, over the same draws
    draws = s["interp.lift_pooled_boot"]["draws"]
    for k in ("random.interp.lift_pooled", "random.interp.coverage_matched",
              "shuffled.interp.info_beyond_token"):  # fmt: skip
        assert s[f"baselines.{k}_boot"]["draws"] == draws, k


def test_two_models_scored_on_the_same_samples_pair_their_replicates(small_suite):
    """Another model (the twin's seed) on the same two samples draws the same examples
    alike: the same draws id; a different seed draws other examples and others."""
    cfg = load_config("configs/dense.yaml", ["model.d_model=32", "model.n_heads=2",
                                             "model.max_seq_len=64", "model.ffn.d_ff=64"])  # fmt: skip
    mc = dataclasses.replace(
        cfg.model, vocab_size=small_suite.tokenizer.get_vocab_size(), pad_token_id=0
    )

    def draws(init: int, seed: int) -> str:
        torch.manual_seed(init)
        fit, score = audit_samples(small_suite, 64, seed)
        s = audited_scores(Transformer(mc).eval(), small_suite, fit, score, seed=seed,
                           matched_units=32)["summary"]  # fmt: skip
        assert s["interp.lift_pooled_boot"]["draws"] == s["interp.info_beyond_token_boot"]["draws"]
        return s["interp.lift_pooled_boot"]["draws"]

    assert draws(0, 0) == draws(1, 0) != draws(0, 1)


# ----------------------------------------------------- the report's decisions


def _audited_run(arch: str, lift, twin, rand, seed: int = 0) -> RunResult:
    """A run whose pooled lift, its twin's and its random control's are (value, lo, hi)."""
    interp = {}
    for key, (v, lo, hi) in (
        ("interp.lift_pooled", lift),
        ("baselines.init.interp.lift_pooled", twin),
        ("baselines.random.interp.lift_pooled", rand),
    ):
        interp[key], interp[f"{key}_ci"] = v, [lo, hi]
    capability = {"val_loss": 1.0, "mean_accuracy": 0.8, "params.active": 10}
    return RunResult(arch, seed, f"runs/{arch}", capability, interp)


def test_the_report_decides_by_intervals(tmp_path):
    runs = (
        _audited_run("dense", (0.10, 0.08, 0.12), (-0.10, -0.12, -0.08), (0.0, -0.02, 0.02)),
        # as high as dense, but a random basis of its span reads as well: not its units
        _audited_run("moe", (0.11, 0.09, 0.13), (-0.10, -0.12, -0.08), (0.12, 0.10, 0.14)),
        # above dense, its twin and its control, all by intervals apart
        _audited_run("transcoder", (0.20, 0.17, 0.23), (0.0, -0.02, 0.02), (0.01, 0.0, 0.02)),
    )
    report = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=runs)
    table = report.decisions()
    assert table.headers == ["pooled lift vs 0", "vs init", "vs random", "vs dense"]
    rows = dict(table.rows)
    assert rows["dense"] == ["above", "above", "above", "–"]
    assert rows["moe"] == ["above", "above", "same", "same (+0.010 [-0.018, 0.038])"]
    assert rows["transcoder"] == ["above", "above", "above", "above (+0.100 [0.064, 0.136])"]
    # a single seed's cell is its value and its interval, without "±"
    text = report.write().read_text()
    assert "0.200 [0.170, 0.230]" in text and "0.200 ±" not in text
    assert "## What the intervals decide" in text


def test_intervals_over_seeds_are_t_intervals_of_the_mean():
    from glassbox.results import stat

    one = stat([0.5], [[0.4, 0.6]])
    assert one["ci"] == [0.4, 0.6]  # one seed: its bootstrap interval
    two = stat([0.4, 0.6], [[0.3, 0.5], [0.5, 0.7]])
    half = 12.7062 * two["std"] / math.sqrt(2)  # t(0.975, 1 df) x the standard error
    assert two["ci"] == pytest.approx([0.5 - half, 0.5 + half], rel=1e-5)
    assert "ci" not in stat([0.4, 0.6])  # no interval where the runs carry none


def test_seeds_that_agree_do_not_make_the_interval_narrower_than_their_own():
    """Two seeds at 0.50 and 0.502, each known to +-0.1 from its examples: the t
    interval (std 0.0014) would be +-0.0127, far inside either seed's; the mean of two
    independent +-0.1 estimates is known to sqrt(0.1^2 + 0.1^2) / 2 = +-0.0707."""
    from glassbox.results import stat

    two = stat([0.5, 0.502], [[0.4, 0.6], [0.402, 0.602]])
    assert two["ci"] == pytest.approx([0.501 - 0.1 / math.sqrt(2), 0.501 + 0.1 / math.sqrt(2)])
    # and where the seeds disagree beyond their own intervals, t's spread decides
    apart = stat([0.2, 0.8], [[0.19, 0.21], [0.79, 0.81]])
    half = 12.7062 * apart["std"] / math.sqrt(2)
    assert apart["ci"] == pytest.approx([0.5 - half, 0.5 + half], rel=1e-5)


def test_t_quantiles_at_whole_and_welch_degrees_of_freedom():
    """Student's t 97.5% quantiles as tables print them; between two whole degrees of
    freedom the quantile lies between theirs; far out it is the normal's 1.960."""
    from glassbox.results import t975

    table = {1: 12.7062, 2: 4.30265, 3: 3.18245, 4: 2.77645, 10: 2.22814, 30: 2.04227}
    assert {df: round(t975(df), 5) for df in table} == pytest.approx(table, abs=1e-4)
    assert t975(2) < t975(1.5) < t975(1)
    assert t975(10_000) == pytest.approx(1.95996, abs=1e-3)


def test_the_difference_of_two_kinds_has_its_own_interval():
    """Known answers of results.difference. One seed each (MOVER from the two
    intervals): 0.50 [0.45, 0.55] against 0.42 [0.37, 0.47] overlap, yet the difference
    0.08 is known to +-hypot(0.05, 0.05) = +-0.0707: [0.0093, 0.1507], above 0; 0.04
    higher is not ([-0.0307, 0.1107]); an asymmetric interval gives an asymmetric one.
    Several seeds: Welch's t interval (equal spreads, 3 + 3 seeds: 4 degrees of
    freedom), never narrower than the seeds' own intervals; a run without an interval
    gives none."""
    from glassbox.results import difference

    lo, hi = difference([0.50], [[0.45, 0.55]], [0.42], [[0.37, 0.47]])
    assert decide([0.45, 0.55], [0.37, 0.47]) == "same"  # the intervals overlap
    assert (lo, hi) == pytest.approx((0.08 - 0.05 * math.sqrt(2), 0.08 + 0.05 * math.sqrt(2)))
    assert decide([lo, hi], [0.0, 0.0]) == "above"
    near = difference([0.50], [[0.45, 0.55]], [0.46], [[0.41, 0.51]])
    assert decide(near, [0.0, 0.0]) == "same"
    skew = difference([0.5], [[0.40, 0.55]], [0.3], [[0.28, 0.40]])
    assert skew == pytest.approx([0.2 - math.hypot(0.10, 0.10), 0.2 + math.hypot(0.05, 0.02)])

    a, cis = [0.48, 0.50, 0.52], [[v - 0.01, v + 0.01] for v in (0.48, 0.50, 0.52)]
    b = [v - 0.08 for v in a]
    half = 2.77645 * math.sqrt(2 * 0.0004 / 3)  # t(0.975, 4 df) x the standard error
    bcis = [[v - 0.01, v + 0.01] for v in b]
    assert difference(a, cis, b, bcis) == pytest.approx([0.08 - half, 0.08 + half], rel=1e-5)
    one_spread = difference([0.5] * 3, [[0.49, 0.51]] * 3, b, bcis)  # va = 0: 2 df
    assert one_spread == pytest.approx(
        [0.08 - 4.30265 * 0.02 / math.sqrt(3), 0.08 + 4.30265 * 0.02 / math.sqrt(3)], rel=1e-5
    )
    # seeds that agree exactly: each mean still carries +-0.1 / sqrt(2) from its examples
    agree = difference([0.5, 0.5], [[0.4, 0.6]] * 2, [0.3, 0.3], [[0.2, 0.4]] * 2)
    assert agree == pytest.approx([0.1, 0.3])
    assert difference([0.5], [None], [0.3], [[0.2, 0.4]]) is None


def test_two_kinds_on_the_same_examples_have_the_paired_interval():
    """Known answers of intervals.paired_interval, through results.difference. Every
    example is hard or easy for both models (x, spread 0.58 an example): model a scores
    x + 0.02, model b x + noise of 0.005. Their intervals overlap, and the interval from
    the two (MOVER) is about +-0.11 and holds 0; the paired one, of the replicate-wise
    differences, is about 0.02 +- 0.001 and does not. Not credited: a model whose lead
    is noise of the same size (c), and replicates of other draws (another seed) or of
    other examples, which do not pair (the interval from the two is used)."""
    from glassbox.results import difference

    n, g = 200, torch.Generator().manual_seed(0)
    x = 2 * torch.rand(n, generator=g, dtype=torch.float64)
    a = x + 0.02
    b = x + 0.005 * torch.randn(n, generator=g, dtype=torch.float64)
    c = x + 0.005 * torch.randn(n, generator=g, dtype=torch.float64)
    w, ones, examples = bootstrap_weights(n, seed=0), torch.ones(n), torch.arange(n)
    same = draws_id(w, examples)
    ra, rb, rc = (ratio_replicates(v, ones, w) for v in (a, b, c))
    A, B, C = boot(ra, same), boot(rb, same), boot(rc, same)
    d = float(a.mean() - b.mean())
    lo, hi = paired_interval(A, B)
    assert lo < d < hi and 0.018 < lo and hi < 0.022 and hi - lo < 0.003
    ma, mb = [float(a.mean())], [float(b.mean())]
    mover = difference(ma, [interval(ra)], mb, [interval(rb)])
    assert decide(interval(ra), interval(rb)) == "same" and mover[0] < 0 < mover[1]
    assert mover[1] - mover[0] > 0.15
    assert difference(ma, [interval(ra)], mb, [interval(rb)], [A], [B]) == [lo, hi]
    noise = paired_interval(C, B)
    assert noise[0] < 0 < noise[1]  # a lead of noise only: not credited
    w1 = bootstrap_weights(n, seed=1)
    other_seed = boot(ratio_replicates(b, ones, w1), draws_id(w1, examples))
    other_examples = boot(rb, draws_id(w, examples + 1))
    assert paired_interval(A, other_seed) is None and paired_interval(A, other_examples) is None
    assert difference(ma, [interval(ra)], mb, [interval(rb)], [A], [other_seed]) == mover
    # seeds trained apart do not pair by their numbers: over several, Welch's as before
    two = ([0.50, 0.52], [[0.45, 0.55], [0.47, 0.57]], [0.40, 0.41], [[0.35, 0.45], [0.36, 0.46]])
    assert difference(*two, [A, A], [B, B]) == difference(*two)
    # saved to 7 significant digits: the interval moves by less than one part in 1e6
    saved = torch.tensor(B["replicates"], dtype=torch.float64)
    assert interval(saved) == pytest.approx(interval(rb), rel=1e-6)


def _boot_of(per_example: torch.Tensor) -> dict:
    """The saved replicates of a mean over the examples, with the draws every call
    shares (seed 0)."""
    n = len(per_example)
    w = bootstrap_weights(n, seed=0)
    return boot(ratio_replicates(per_example, torch.ones(n), w), draws_id(w, torch.arange(n)))


def test_a_model_is_told_from_its_twin_and_control_by_the_paired_difference(tmp_path):
    """Known answers of the report's seed-by-seed decisions against the twin and the
    control where the runs kept their replicates. The examples' difficulty x (spread
    0.58) is shared by a model and its twin: the model scores x + 0.02, its twin x plus
    noise of 0.005, so their intervals overlap (the old decision: "same") while the
    paired difference is about 0.02 +- 0.001: "above". Not credited: a control whose
    difference is noise only ("same"). Without replicates, the intervals decide."""
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.rand(200, generator=g, dtype=torch.float64)
    model, twin = x + 0.02, x + 0.005 * torch.randn(200, generator=g, dtype=torch.float64)
    control = model + 0.005 * torch.randn(200, generator=g, dtype=torch.float64)

    def run(arch: str, boots: bool) -> RunResult:
        interp = {}
        for key, v in (("interp.lift_pooled", model), ("baselines.init.interp.lift_pooled", twin),
                       ("baselines.random.interp.lift_pooled", control)):  # fmt: skip
            b = _boot_of(v)
            interp[key] = float(v.mean())
            interp[f"{key}_ci"] = interval(torch.tensor(b["replicates"], dtype=torch.float64))
            if boots:
                interp[f"{key}_boot"] = b
        return RunResult(arch, 0, f"runs/{arch}", {"val_loss": 1.0, "params.active": 10}, interp)

    with_boots, without = run("dense", True), run("moe", False)
    ci = with_boots.interp
    assert decide(ci["interp.lift_pooled_ci"], ci["baselines.init.interp.lift_pooled_ci"]) == "same"
    report = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=(with_boots, without))
    twin_key = "baselines.init.interp.lift_pooled"
    control_key = "baselines.random.interp.lift_pooled"
    assert report.paired("dense", "interp.lift_pooled", twin_key) == "above"
    assert report.paired("dense", "interp.lift_pooled", control_key) == "same"
    assert report.paired("moe", "interp.lift_pooled", twin_key) == "same"  # intervals overlap
    flagged = report.not_informative()
    assert "interp.lift_pooled" not in [m.key for m in flagged["dense"]]
    assert "interp.lift_pooled" in [m.key for m in flagged["moe"]]


def test_the_report_tells_kinds_from_dense_by_the_difference(tmp_path):
    """The report's "vs dense" decision reads the interval of the difference and shows
    it: overlapping intervals whose difference excludes 0 are "above"."""
    runs = (
        _audited_run("dense", (0.42, 0.37, 0.47), (-0.10, -0.12, -0.08), (0.0, -0.02, 0.02)),
        _audited_run("moe", (0.46, 0.41, 0.51), (-0.10, -0.12, -0.08), (0.0, -0.02, 0.02)),
        _audited_run("transcoder", (0.50, 0.45, 0.55), (0.0, -0.02, 0.02), (0.0, -0.02, 0.02)),
    )
    rows = dict(Report(out_dir=tmp_path, seeds=(0,), config={}, runs=runs).decisions().rows)
    assert rows["transcoder"][-1] == "above (+0.080 [0.009, 0.151])"
    assert rows["moe"][-1] == "same (+0.040 [-0.031, 0.111])"
    assert rows["dense"][-1] == "–"


def test_twins_are_compared_seed_by_seed(tmp_path):
    """Two seeds, each well above its own twin, whose twins lie far apart (-0.30 and
    -0.10): the t interval of the twins' mean (one degree of freedom) would overlap the
    trained interval; seed by seed the decision is above and nothing is marked †. A
    kind whose second seed overlaps its own twin is marked, and so is one whose seeds
    go opposite ways; one seed decides as before."""
    runs = (
        _audited_run("dense", (0.10, 0.08, 0.12), (-0.30, -0.32, -0.28), (0.0, -0.01, 0.01), 0),
        _audited_run("dense", (0.10, 0.08, 0.12), (-0.10, -0.12, -0.08), (0.0, -0.01, 0.01), 1),
        # seed 1 does not tell its model from its twin
        _audited_run("moe", (0.10, 0.08, 0.12), (-0.10, -0.12, -0.08), (0.0, -0.01, 0.01), 0),
        _audited_run("moe", (0.10, 0.08, 0.12), (0.09, 0.07, 0.11), (0.0, -0.01, 0.01), 1),
        # above its twin at seed 0, below it at seed 1
        _audited_run("transcoder", (0.10, 0.08, 0.12), (-0.10, -0.12, -0.08), (0.0, -0.01, 0.01), 0),
        _audited_run("transcoder", (0.10, 0.08, 0.12), (0.30, 0.28, 0.32), (0.0, -0.01, 0.01), 1),
    )  # fmt: skip
    report = Report(out_dir=tmp_path, seeds=(0, 1), config={}, runs=runs)
    twin_ci = report.summary["dense"]["baselines.init.interp.lift_pooled"]["ci"]
    assert twin_ci[1] > 0.08  # the twins' mean interval reaches the trained one
    rows = dict(report.decisions().rows)
    assert rows["dense"][1:3] == ["above", "above"]  # vs init, vs random
    assert rows["moe"][1] == "same" and rows["transcoder"][1] == "same"
    flagged = {a: [m.key for m in ms] for a, ms in report.not_informative().items()}
    assert "interp.lift_pooled" not in flagged["dense"]
    assert "interp.lift_pooled" in flagged["moe"] and "interp.lift_pooled" in flagged["transcoder"]


def test_the_posthoc_latents_are_told_from_the_units_built_to_be_read_by_the_paired_difference(tmp_path):  # fmt: skip
    """Known answers of the post-hoc table's differences. The post-hoc latents score the
    examples' difficulty x plus 0.02, dense's neurons x: the intervals overlap, the
    paired difference excludes 0 ("above"). Not credited: the transcoder scores the
    post-hoc values plus noise only ("same"). A route without replicates falls back to
    the two intervals ("same" against dense)."""
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(200, generator=g, dtype=torch.float64)
    post = x + 0.02
    noisy = post + 0.005 * torch.randn(200, generator=g, dtype=torch.float64)

    def scores(v: torch.Tensor, boots: bool = True) -> dict:
        b = _boot_of(v)
        ci = interval(torch.tensor(b["replicates"], dtype=torch.float64))
        key = "interp.coverage_matched"
        return {key: float(v.mean()), f"{key}_ci": ci, **({f"{key}_boot": b} if boots else {})}

    def run(arch: str, v: torch.Tensor) -> RunResult:
        return RunResult(arch, 0, f"runs/{arch}", {"val_loss": 1.0, "params.active": 10}, scores(v))

    runs = (run("dense", x), run("transcoder", noisy))
    for boots, against_dense in ((True, "above"), (False, "same")):
        route = PostHocResult("dense", 0, 10, scores(post, boots))
        table = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=runs, posthoc=(route,)).posthoc_versus()  # fmt: skip
        assert table.headers == ["matched coverage"]
        rows = dict(table.rows)
        assert rows["post-hoc − dense"][0].startswith(f"{against_dense} (+0.020 [")
        assert rows["post-hoc − transcoder"][0].startswith("same (")


def test_against_dense_seed_by_seed_shows_which_seeds_carry_a_decision(tmp_path):
    """Known answers of the table "Against dense, seed by seed". At seed 0 moe scores
    the examples' difficulty plus 0.02 against dense's difficulty: paired "above" while
    the two intervals overlap. At seed 1 moe scores dense's values plus noise only:
    "same", not credited. The transcoder shares one seed with dense: no row. Without
    replicates a seed falls back to the two intervals ("same" for the same lead). The
    last column is the decisions table's cell over the seeds."""
    g = torch.Generator().manual_seed(2)
    key = "interp.lift_pooled"

    def run(arch: str, seed: int, v: torch.Tensor, boots: bool = True) -> RunResult:
        b = _boot_of(v)
        ci = interval(torch.tensor(b["replicates"], dtype=torch.float64))
        interp = {key: float(v.mean()), f"{key}_ci": ci, **({f"{key}_boot": b} if boots else {})}
        return RunResult(arch, seed, f"runs/{arch}-{seed}", {"val_loss": 1.0, "params.active": 10}, interp)  # fmt: skip

    x = [2 * torch.rand(200, generator=g, dtype=torch.float64) for _ in range(3)]
    runs = [run("dense", s, x[s]) for s in range(3)]
    runs += [run("moe", 0, x[0] + 0.02), run("moe", 1, x[1] + 0.005 * torch.randn(200, generator=g, dtype=torch.float64))]  # fmt: skip
    runs += [run("transcoder", 2, x[2] + 0.02)]
    runs += [run("weight_sparse", s, x[s] + 0.02, boots=False) for s in (0, 1)]
    report = Report(out_dir=tmp_path, seeds=(0, 1, 2), config={}, runs=tuple(runs))
    table = report.vs_dense_by_seed()
    assert table.headers == ["seed 0", "seed 1", "over the seeds"]
    rows = dict(table.rows)
    assert set(rows) == {"moe: pooled lift", "weight_sparse: pooled lift"}
    moe = rows["moe: pooled lift"]
    assert moe[0].startswith("above (+0.020 [") and moe[1].startswith("same (")
    assert rows["weight_sparse: pooled lift"][0].startswith("same (+0.020 [")
    decided = dict(report.decisions().rows)
    assert moe[2] == decided["moe"][-1] and rows["weight_sparse: pooled lift"][2] == decided["weight_sparse"][-1]  # fmt: skip
    assert "## Against dense, seed by seed" in report.write().read_text()
    # one seed each: the decisions table says it all
    one = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=(runs[0], runs[3]))
    assert one.vs_dense_by_seed() is None
