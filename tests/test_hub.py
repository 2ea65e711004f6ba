"""Where checkpoints come from: a shipped name ("glassbox/<name>") resolves offline to
the package's checkpoints/ folder; a hub id goes through huggingface_hub, tested
offline against a stand-in hub (an HfApi whose uploads land in a local hub cache that
snapshot_download then reads with HF_HUB_OFFLINE); `save_pretrained(...,
push_to_hub=...)` round-trips, compared tensor by tensor. And every checkpoint that
is shipped loads without unpickling anything and `glassbox eval` reproduces its
metrics.json (shown on a tiny trained checkpoint, the same format and command)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi

from glassbox import archs
from glassbox.archs import CheckpointError, FFNConfig, ModelConfig, Transformer
from glassbox.archs.checkpoint import FILES, resolve_checkpoint, shipped_dir
from glassbox.cli import main
from tests.tiny_checkpoints import tiny_checkpoint

# `glassbox eval` against metrics.json written at the end of training, same split and
# batches: losses within EVAL_ATOL (the same float32 code, another process and thread
# count), accuracies within one answer token in EVAL_ACC_ATOL of them.
EVAL_ATOL = 1e-4
EVAL_ACC_ATOL = 1e-3


def random_model(seed: int = 0, vocab: int = 40) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, ffn=FFNConfig(d_ff=48))
    return Transformer(cfg).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


class StandInHub(HfApi):
    """The two HfApi calls save_pretrained makes, served by a local hub cache: an
    upload becomes a new commit (a snapshot directory named by the hash of its files,
    refs/main pointing at it), in the layout snapshot_download reads offline
    (models--owner--name/{refs/main, snapshots/<commit>/...})."""

    def __init__(self, cache: Path, fail: bool = False):
        super().__init__()
        self.cache, self.fail = cache, fail

    def _repo(self, repo_id: str) -> Path:
        return self.cache / ("models--" + repo_id.replace("/", "--"))

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kw):
        assert repo_type in (None, "model")
        (self._repo(repo_id) / "refs").mkdir(parents=True, exist_ok=True)
        return f"stand-in://{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, allow_patterns=None, **kw):
        if self.fail:
            raise ConnectionError("stand-in hub is down")
        folder = Path(folder_path)
        names = sorted(allow_patterns or [p.name for p in folder.iterdir()])
        digest = hashlib.sha1()
        for n in names:
            digest.update(n.encode() + (folder / n).read_bytes())
        commit = digest.hexdigest()
        snap = self._repo(repo_id) / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(folder / n, snap / n)
        (self._repo(repo_id) / "refs" / "main").write_text(commit)
        return commit


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A hub cache of our own, and huggingface_hub offline (nothing reaches a network)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# ----------------------------------------------------------------- shipped names


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    root = tmp_path / "shipped"
    monkeypatch.setenv("GLASSBOX_CHECKPOINTS", str(root))
    return root


def test_shipped_name_resolves_offline(shipped, offline_hub):
    model = random_model(seed=1)
    archs.save_pretrained(model, shipped / "tiny")
    assert archs.shipped_checkpoints() == ["tiny"]
    loaded = archs.load_pretrained("glassbox/tiny")
    assert_same_weights(model, loaded)
    assert resolve_checkpoint("glassbox/tiny") == shipped / "tiny"
    assert not any(offline_hub.iterdir())  # the hub cache was never touched


def test_unknown_shipped_name_lists_the_shipped_ones(shipped):
    for name in ("dense", "moe"):
        archs.save_pretrained(random_model(), shipped / name)
    (shipped / "notes").mkdir()  # a folder without config.yaml is not a checkpoint
    with pytest.raises(CheckpointError) as e:
        archs.load_pretrained("glassbox/dnese")
    msg = str(e.value)
    assert "\n" not in msg
    assert "glassbox/dnese: is not a shipped checkpoint" in msg
    assert "glassbox/dense, glassbox/moe" in msg and "notes" not in msg
    for bad in ("glassbox/", "glassbox/../shipped/dense", "glassbox/.hidden"):
        with pytest.raises(CheckpointError, match="is not a shipped checkpoint"):
            resolve_checkpoint(bad)


def test_no_shipped_checkpoints_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSBOX_CHECKPOINTS", str(tmp_path))  # an empty folder
    assert archs.shipped_checkpoints() == []
    with pytest.raises(CheckpointError, match=r"none yet\); pass a checkpoint directory"):
        resolve_checkpoint("glassbox/dense")


def test_default_shipped_dir_is_the_package_checkpoints_folder(monkeypatch):
    monkeypatch.delenv("GLASSBOX_CHECKPOINTS", raising=False)
    # beside archs/: the repository's checkpoints/ here, glassbox/checkpoints/ in a wheel
    assert shipped_dir() == Path(archs.__file__).resolve().parent.parent / "checkpoints"
    assert (shipped_dir() / "README.md").is_file()


def test_a_local_directory_named_glassbox_wins(tmp_path, monkeypatch, shipped):
    monkeypatch.chdir(tmp_path)
    model = random_model(seed=4)
    archs.save_pretrained(model, tmp_path / "glassbox" / "mine")
    assert_same_weights(model, archs.load_pretrained("glassbox/mine"))


# ----------------------------------------------------------------- the hub


def test_push_then_load_from_the_hub(tmp_path, offline_hub):
    hub = StandInHub(offline_hub)
    model = random_model(seed=2)
    local = archs.save_pretrained(
        model, tmp_path / "local", metrics={"val_loss": 1.5}, push_to_hub="alice/tiny", hub_api=hub
    )
    assert local == tmp_path / "local"
    shutil.rmtree(local)  # what comes back must come from the hub cache
    path = resolve_checkpoint("alice/tiny")
    assert offline_hub in path.parents and path.parent.name == "snapshots"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        f for f in FILES if f != "tokenizer.json"
    )
    loaded = archs.load_pretrained("alice/tiny")
    assert_same_weights(model, loaded)
    assert json.loads((path / "metrics.json").read_text()) == {"val_loss": 1.5}
    x = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_second_push_is_main_and_the_first_stays_a_revision(tmp_path, offline_hub):
    hub = StandInHub(offline_hub)
    first, second = random_model(seed=5), random_model(seed=6)
    archs.save_pretrained(first, tmp_path / "a", push_to_hub="alice/tiny", hub_api=hub)
    rev = (offline_hub / "models--alice--tiny" / "refs" / "main").read_text()
    archs.save_pretrained(second, tmp_path / "b", push_to_hub="alice/tiny", hub_api=hub)
    assert_same_weights(second, archs.load_pretrained("alice/tiny"))
    assert_same_weights(first, archs.load_pretrained("alice/tiny", revision=rev))


def test_hub_id_not_in_the_cache_offline_is_one_line(offline_hub):
    with pytest.raises(CheckpointError) as e:
        archs.load_pretrained("alice/never-pushed")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checkpoint error: alice/never-pushed:")
    assert "not in the local hub cache" in msg


def test_failed_push_keeps_the_local_checkpoint(tmp_path, offline_hub):
    model = random_model(seed=3)
    with pytest.raises(CheckpointError) as e:
        archs.save_pretrained(
            model,
            tmp_path / "kept",
            push_to_hub="alice/tiny",
            hub_api=StandInHub(offline_hub, fail=True),
        )
    msg = str(e.value)
    assert "\n" not in msg and "upload failed (ConnectionError: stand-in hub is down)" in msg
    assert str(tmp_path / "kept") in msg
    assert_same_weights(model, archs.load_pretrained(tmp_path / "kept"))


@pytest.mark.parametrize("repo", ["glassbox/dense", "no-owner", "a/b/c"])
def test_push_refuses_what_is_not_a_hub_id(tmp_path, offline_hub, repo):
    hub = StandInHub(offline_hub)
    with pytest.raises(CheckpointError, match="needs a hub repository id 'owner/name'"):
        archs.save_pretrained(random_model(), tmp_path / "x", push_to_hub=repo, hub_api=hub)
    assert not any(offline_hub.iterdir())


# ------------------------------------------- shipped checkpoints: load and reproduce


def assert_eval_reproduces_metrics(checkpoint: Path, capsys) -> None:
    """`glassbox eval --json` on the batches training evaluated (run.eval_max_batches)
    against the checkpoint's metrics.json."""
    saved = json.loads((checkpoint / "metrics.json").read_text())
    config = archs.checkpoint.read_config(checkpoint)
    batches = int(config.get("run", {}).get("eval_max_batches", 0))
    capsys.readouterr()
    assert main(["eval", str(checkpoint), "--json", "--max-batches", str(batches)]) == 0
    now = json.loads(capsys.readouterr().out)
    assert now["val_loss"] == pytest.approx(saved["val_loss"], abs=EVAL_ATOL)
    assert now["perplexity"] == pytest.approx(saved["perplexity"], rel=EVAL_ATOL)
    assert now["skills"].keys() == saved["skills"].keys()
    for skill, vals in saved["skills"].items():
        for key, v in vals.items():
            if v is None:
                continue
            tol = EVAL_ATOL if "loss" in key or "logit" in key else EVAL_ACC_ATOL
            assert now["skills"][skill][key] == pytest.approx(v, abs=tol), (skill, key)


def assert_loads_without_unpickling(checkpoint: Path, monkeypatch) -> None:
    import pickle

    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    archs.load_pretrained(checkpoint)


def test_trained_checkpoint_loads_and_eval_reproduces_its_metrics(monkeypatch, capsys):
    ckpt = tiny_checkpoint("dense")
    assert_loads_without_unpickling(ckpt, monkeypatch)
    assert_eval_reproduces_metrics(ckpt, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", archs.shipped_checkpoints())
def test_every_shipped_checkpoint(name, monkeypatch, capsys):
    """Every checkpoint in checkpoints/ (none until they are trained: then one case
    each): loads by its shipped name without unpickling, reproduces its metrics.json."""
    path = resolve_checkpoint(f"glassbox/{name}")
    assert_loads_without_unpickling(f"glassbox/{name}", monkeypatch)
    assert_eval_reproduces_metrics(path, capsys)
