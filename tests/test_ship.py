"""`glassbox ship`: a compare's runs copied into a checkpoints folder with their
training curves and model cards whose numbers are the report's, checked on tiny
trained runs and a report whose values are set by hand."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file

from glassbox.archs import CheckpointError, load_pretrained, shipped_checkpoints
from glassbox.archs.checkpoint import shipped_dir
from glassbox.cli import main
from glassbox.compare import compare, load_compare_config
from glassbox.report import Report
from glassbox.results import RunResult
from glassbox.ship import model_card, read_curve
from tests.tiny_checkpoints import tiny_checkpoint

ARCHS = ("dense", "transcoder")


def _result(arch, seed, loss, cov, cov_init):
    capability = {
        "val_loss": loss, "mean_accuracy": 0.5 + seed / 10, "params.active": 10,
        "params.total": 20, "params.nonzero": 20, "train.steps": 30, "train.tokens": 900,
    }  # fmt: skip
    interp = {
        "interp.coverage": cov,
        "baselines.init.interp.coverage": cov_init,
        "baselines.token.interp.coverage": 0.35,
        # an audited score: with its interval, its twin's and its random control's
        "interp.lift_pooled": cov - 0.2,
        "interp.lift_pooled_ci": [cov - 0.22, cov - 0.18],
        "baselines.init.interp.lift_pooled": -0.1,
        "baselines.init.interp.lift_pooled_ci": [-0.12, -0.08],
        "baselines.random.interp.lift_pooled": 0.0,
        "baselines.random.interp.lift_pooled_ci": [-0.01, 0.01],
    }
    return RunResult(arch, seed, f"runs/{arch}-seed{seed}", capability, interp)


@pytest.fixture
def runs_dir(tmp_path):
    """A trained compare's out_dir: tiny runs at seed 0, a report over seeds 0 and 1."""
    root = tmp_path / "report_long"
    for arch in ARCHS:
        shutil.copytree(tiny_checkpoint(arch).parent, root / "runs" / f"{arch}-seed0")
    config = {
        "seeds": [0, 1],
        "architectures": {a: f"configs/{a}.yaml" for a in ARCHS},
        "overrides": ["trainer.max_steps=30"],
    }
    runs = (
        _result("dense", 0, 1.25, 0.30, 0.29),  # within the twin's spread: not informative
        _result("dense", 1, 9.0, 0.31, 0.30),
        _result("transcoder", 0, 1.5, 0.45, 0.25),
        _result("transcoder", 1, 8.0, 0.46, 0.26),
    )
    Report(out_dir=root, seeds=(0, 1), config=config, runs=runs).write()
    return root


def _row(card: str, header: str) -> list[str]:
    line = next(x for x in card.splitlines() if x.startswith(f"| {header} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_ship_copies_the_runs_with_cards_of_their_seed(tmp_path, runs_dir, capsys):
    out = tmp_path / "checkpoints"
    assert main(["ship", str(runs_dir), "--to", str(out)]) == 0
    # one progress line per checkpoint (off a terminal: with the count and the time)
    printed = capsys.readouterr().out
    assert f"ship: shipped {out / 'dense'}  [1/2 jobs" in printed
    assert f"ship: shipped {out / 'transcoder'}  [2/2 jobs" in printed
    for arch in ARCHS:
        dest, run = out / arch, runs_dir / "runs" / f"{arch}-seed0"
        for name in ("config.yaml", "model.safetensors", "tokenizer.json", "metrics.json"):
            assert (dest / name).read_bytes() == (run / "checkpoint" / name).read_bytes()
        assert (dest / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        model = load_pretrained(dest)  # loads as a checkpoint, nothing unpickled
        saved = load_file(dest / "model.safetensors")
        assert all((saved[k] == v).all() for k, v in model.state_dict().items() if k in saved)
    card = (out / "transcoder" / "README.md").read_text()
    assert card.startswith("# glassbox/transcoder\n")
    assert _row(card, "val loss") == ["1.500", "1.250"]  # seed 0's, not the mean over seeds
    assert _row(card, "answer accuracy") == ["50.0", "50.0"]
    # the score, its untrained twin, the token alone, its control, the dense baseline
    assert _row(card, "coverage") == ["0.450", "0.250", "0.350", "–", "0.300"]
    # an audited score of seed 0 with its 95% interval, and its random control's
    assert _row(card, "pooled lift") == [
        "0.250 [0.230, 0.270]", "-0.100 [-0.120, -0.080]", "–", "0.000 [-0.010, 0.010]",
        "0.100 [0.080, 0.120]",
    ]  # fmt: skip
    assert "latents, topk with k = 8" in card and "glassbox/transcoder" in card
    assert "glassbox train configs/transcoder.yaml trainer.max_steps=30 run.seed=0" in card
    dense_card = (out / "dense" / "README.md").read_text()
    assert _row(dense_card, "coverage") == ["0.300 †", "0.290", "0.350", "–"]  # no dense column


def test_a_family_ships_nested_and_loads_by_its_nested_name(tmp_path, runs_dir, monkeypatch):
    """--to a folder inside the shipped one (checkpoints/code): the cards name
    glassbox/code/<arch>, which loads; a code run's corpus manifest travels with it; the
    compare that trained them scored them, and the card says so."""
    (runs_dir / "runs" / "dense-seed0" / "checkpoint" / "corpus_manifest.json").write_text("{}")
    shipped = tmp_path / "shipped"
    monkeypatch.setenv("GLASSBOX_CHECKPOINTS", str(shipped))
    args = ["ship", str(runs_dir), "--to", str(shipped / "code"), "--trained-by", "glassbox ladder"]
    assert main(args) == 0
    card = (shipped / "code" / "dense" / "README.md").read_text()
    assert (
        card.startswith("# glassbox/code/dense\n")
        and 'load_pretrained("glassbox/code/dense")' in card
    )
    assert "Scored by `glassbox ladder`, which" in card  # not make report
    assert (shipped / "code" / "dense" / "corpus_manifest.json").read_text() == "{}"
    assert not (shipped / "code" / "transcoder" / "corpus_manifest.json").exists()
    model = load_pretrained("glassbox/code/dense")
    assert model.num_params() > 0
    assert shipped_checkpoints() == []  # a family's folder is not itself a checkpoint
    with pytest.raises(CheckpointError, match="not a shipped checkpoint"):
        load_pretrained("glassbox/code/../code/dense/.")


def test_cards_only_rewrites_the_cards_from_another_report(tmp_path, runs_dir):
    out = tmp_path / "checkpoints"
    main(["ship", str(runs_dir), "--to", str(out)])
    weights = (out / "dense" / "model.safetensors").stat().st_mtime_ns
    scored = tmp_path / "report"
    runs = (_result("dense", 0, 1.0, 0.5, 0.2), _result("transcoder", 0, 2.0, 0.6, 0.2))
    config = {"seeds": [0], "architectures": {a: f"configs/{a}.yaml" for a in ARCHS}}
    Report(out_dir=scored, seeds=(0,), config=config, runs=runs).write()
    args = ["ship", str(runs_dir), "--to", str(out), "--cards-only"]
    assert main([*args, "--scores", str(scored / "report.json")]) == 0
    assert (out / "dense" / "model.safetensors").stat().st_mtime_ns == weights
    assert _row((out / "dense" / "README.md").read_text(), "coverage")[:2] == ["0.500", "0.200"]


def test_ship_refuses_what_is_not_there(tmp_path, runs_dir, capsys):
    assert main(["ship", str(runs_dir), "--to", str(tmp_path / "c"), "--seed", "3"]) == 2
    assert "seed=3: the report at" in capsys.readouterr().err
    shutil.rmtree(runs_dir / "runs" / "transcoder-seed0" / "checkpoint")
    with pytest.raises(CheckpointError, match=r"transcoder-seed0/checkpoint: not an exported"):
        from glassbox.ship import ship

        ship(runs_dir, tmp_path / "c")
    assert main(["ship", str(runs_dir), "--to", str(tmp_path / "d"), "--cards-only"]) == 1
    assert "no shipped checkpoint" in capsys.readouterr().err


def test_read_curve_reads_lightnings_csv(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/loss,val/loss\n0,9,2.5,\n0,19,2.0,\n0,19,,1.75\n0,29,1.5,\n")
    assert read_curve(csv) == {
        "train/loss": [(9, 2.5), (19, 2.0), (29, 1.5)],
        "val/loss": [(19, 1.75)],
    }


def _from(card: str, heading: str) -> str:
    return card[card.index(heading) :]


@pytest.mark.slow
@pytest.mark.skipif(
    "dense" not in shipped_checkpoints(), reason="no shipped dense checkpoint in checkpoints/"
)
def test_the_main_job_reproduces_the_shipped_dense_card(tmp_path):
    """`make report` (configs/compare_shipped.yaml) on the shipped dense checkpoint
    gives the numbers its model card states: the card written from this report is the
    shipped card, from its capability table to the end."""
    shipped = shipped_dir() / "dense"
    args = [
        f"out_dir={tmp_path / 'report'}", "architectures={dense: configs/dense.yaml}",
        "checkpoints={dense: glassbox/dense}", "posthoc.enabled=false",
    ]  # fmt: skip
    report = compare(load_compare_config("configs/compare_shipped.yaml", args))
    card = shipped.joinpath("README.md").read_text()
    again = model_card(report, "dense", shipped)
    assert _row(card, "contextual lift")[0] == _row(again, "contextual lift")[0]
    assert _from(again, "## Capability") == _from(card, "## Capability")


@pytest.mark.parametrize("skills", [True, False])
def test_a_card_says_what_its_circuits_are_per(tmp_path, skills):
    """The circuit rows are introduced as per skill where the run has whole-skill
    circuits (the skill suite), as per micro-task where it has only micro-tasks' (code):
    a code card must not describe skills it never had."""
    interp = {
        "interp.microcircuit.close_bracket.nodes": 86,
        "interp.skill_circuit_size.dyck": 223 if skills else None,
    }
    base = _result("dense", 0, 1.25, 0.30, 0.29)
    run = RunResult("dense", 0, base.run_dir, dict(base.capability), {**base.interp, **interp})
    dest = tmp_path / "dense"
    shutil.copytree(tiny_checkpoint("dense").parent / "checkpoint", dest)
    report = Report(out_dir=tmp_path / "r", seeds=(0,), config={"seeds": [0]}, runs=(run,))
    card = model_card(report, "dense", dest)
    assert _row(card, "close_bracket nodes")[0] == "86"
    assert ("Circuits per skill:" in card) == skills
    assert ("Circuits per micro-task" in card) == (not skills)


def test_the_shipped_checkpoints_fit_in_100_mb():
    """checkpoints/ holds at most 100 MB in all (a clone stays small): what the size
    ladder's L rung may ship is what is left (benchmarks/README.md, scale_gpu.sh)."""
    files = [p for p in shipped_dir().rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert files and total <= 100e6, f"checkpoints/ holds {total / 1e6:.1f} MB"
