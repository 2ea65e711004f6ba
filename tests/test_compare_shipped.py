"""`glassbox compare` on existing checkpoints (CompareConfig.checkpoints,
configs/compare_shipped.yaml): nothing is trained, each checkpoint is scored beside its
untrained twin with its own config, its capability is its metrics.json, and the
shipped checkpoints folder is only read. Shown on tiny trained checkpoints standing in
for the shipped ones (GLASSBOX_CHECKPOINTS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glassbox.archs import CheckpointError
from glassbox.archs.config import ConfigError
from glassbox.compare import CheckpointRun, compare, load_compare_config
from glassbox.scoring import PARTS
from tests.tiny_checkpoints import tiny_checkpoint

SHIPPED = "configs/compare_shipped.yaml"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    root = tmp_path / "shipped"
    for kind in ("dense", "transcoder"):
        shutil.copytree(tiny_checkpoint(kind), root / kind)
    monkeypatch.setenv("GLASSBOX_CHECKPOINTS", str(root))
    return root


def _listing(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def _args(tmp_path, *extra):
    return [
        f"out_dir={tmp_path / 'report'}",
        "architectures={dense: configs/dense.yaml, transcoder: configs/transcoder.yaml}",
        "checkpoints={dense: glassbox/dense, transcoder: glassbox/transcoder}",
        "analysis_examples=32", "posthoc.steps=5", "posthoc.d_latent=128", *extra,
    ]  # fmt: skip


def test_the_shipped_config_scores_every_architecture_from_its_checkpoint():
    cc = load_compare_config(SHIPPED)
    assert cc.seeds == [0] and set(cc.checkpoints) == set(cc.architectures)
    assert all(v == f"glassbox/{k}" for k, v in cc.checkpoints.items())


def test_compare_scores_checkpoints_without_training(tmp_path, shipped):
    before = _listing(shipped)
    report = compare(load_compare_config(SHIPPED, _args(tmp_path)))
    assert not any(r.trained_now for r in report.runs)
    assert _listing(shipped) == before  # read, never written
    runs = {r.arch: r for r in report.runs}
    assert set(runs) == {"dense", "transcoder"}
    for arch, r in runs.items():
        saved = json.loads((shipped / arch / "metrics.json").read_text())
        assert r.capability["val_loss"] == saved["val_loss"]
        assert r.seed == 0 and r.train_seconds == 0
        # every score beside its untrained twin's
        assert "interp.coverage" in r.interp and "baselines.init.interp.coverage" in r.interp
        assert r.interp["baselines.init.interp.coverage"] != r.interp["interp.coverage"]
        run_dir = tmp_path / "report" / "runs" / f"{arch}-seed0"
        assert (run_dir / "analysis" / "row.json").is_file()
        assert not (run_dir / "analysis" / PARTS).exists()  # scored whole: no parts left
        assert not (run_dir / "checkpoint").exists()  # nothing trained or exported
    assert runs["transcoder"].interp["interp.l0"] == pytest.approx(8.0)  # its k
    for name in ("report.md", "report.json", "pareto.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert "| transcoder |" in (tmp_path / "report" / "report.md").read_text()
    # scored again: the saved scores are reused under the same keys
    again = compare(load_compare_config(SHIPPED, _args(tmp_path)))
    assert [r.key for r in again.runs] == [r.key for r in report.runs]


def test_checkpoint_run_uses_the_checkpoints_own_config(tmp_path, shipped):
    run = CheckpointRun("transcoder", "glassbox/transcoder", tmp_path)
    assert run.export == shipped / "transcoder" and run.is_current()
    assert run.cfg.model.ffn.kind == "transcoder" and run.cfg.model.ffn.transcoder.d_latent == 128
    assert run.run_dir == tmp_path / "runs" / "transcoder-seed0"


def test_a_checkpoint_of_an_unknown_architecture_is_refused(tmp_path, shipped):
    cc = load_compare_config(SHIPPED, _args(tmp_path, "checkpoints={moe: glassbox/dense}"))
    with pytest.raises(ConfigError, match=r"checkpoints.moe='glassbox/dense': not an architecture"):
        compare(cc)


def test_a_checkpoint_at_another_seed_is_refused(tmp_path, shipped):
    cc = load_compare_config(SHIPPED, _args(tmp_path, "seeds=[0, 1]"))
    with pytest.raises(ConfigError) as e:
        compare(cc)
    assert "trained at run.seed=0" in str(e.value) and "set seeds=[0]" in str(e.value)
    assert not (tmp_path / "report" / "runs").exists()


def test_a_missing_shipped_checkpoint_lists_the_shipped_ones(tmp_path, shipped):
    cc = load_compare_config(SHIPPED, _args(tmp_path, "checkpoints={transcoder: glassbox/tc}"))
    with pytest.raises(
        CheckpointError,
        match=r"glassbox/tc: is not a shipped checkpoint .*glassbox/dense, glassbox/transcoder",
    ):
        compare(cc)


def test_scoring_in_worker_processes_equals_scoring_in_process(tmp_path, shipped, capsys):
    """jobs=2 scores the runs and the post-hoc route in worker processes; the report
    holds the same numbers as scoring them one after another here."""
    here = compare(load_compare_config(SHIPPED, _args(tmp_path / "here")))
    there = compare(load_compare_config(SHIPPED, [*_args(tmp_path / "there"), "jobs=2"]))
    out = capsys.readouterr().out
    # one progress line per job done, off a terminal ("... [2/3 jobs, 0:14 elapsed]")
    assert "compare: scored post-hoc transcoders on dense seed 0  [" in out
    assert "compare: scored transcoder seed 0  [" in out and "failed" not in out
    for a, b in zip(here.runs, there.runs):
        assert a.arch == b.arch and a.key == b.key
        assert b.interp.keys() == a.interp.keys()
        for k, v in a.interp.items():
            if isinstance(v, float):
                assert b.interp[k] == pytest.approx(v, rel=1e-5, abs=1e-6, nan_ok=True), k
            else:
                assert b.interp[k] == v, k
    assert there.posthoc[0].scores["interp.fvu"] == pytest.approx(
        here.posthoc[0].scores["interp.fvu"], rel=1e-4
    )
