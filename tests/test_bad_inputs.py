"""Bad input, tried as a new user would: every case is refused in one line at the door.

One tiny checkpoint is trained once for the module (through the CLI); each checkpoint
case corrupts a copy of it. Every case asserts the exit code, that stderr is one line
without a traceback, that the line names the file or key at fault, and that nothing
was written or lost (the directories involved are the same, byte for byte, after).
Categories: checkpoints, configs, prompts, divergence and interrupted writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from glassbox import archs
from glassbox.archs.errors import ArgumentError, CheckpointError
from glassbox.archs.tools import ToolRegistry, generate_with_tools
from glassbox.archs.tools.calculator import Calculator
from glassbox.archs.writes import clean_interrupted_writes, current_umask
from glassbox.cli import main
from glassbox.training.callbacks import AtomicCheckpointIO
from glassbox.training.module import cosine_with_warmup
from tests.test_training import FAST

MAX_SEQ_LEN = 64  # FAST's model.max_seq_len


# --- helpers -------------------------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha1 of the bytes, or "dir"} of everything under root."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, want_code: int, *fragments: str) -> str:
    """Exit code `want_code`, stderr exactly one line without a traceback, naming
    every fragment."""
    lines = err.strip().splitlines()
    assert code == want_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def run_args(tmp: Path, data: Path, *extra: str) -> list[str]:
    return [
        "train", "configs/dense.yaml", *FAST, f"data.cache_dir={data}", f"run.out_dir={tmp}",
        *extra,
    ]  # fmt: skip


# --- the one trained checkpoint ------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of 4 steps (checkpoints at 2 and 4), trained with the default warm-up of
    100 steps: the warm-up is clamped with a notice, not refused."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            run_args(
                tmp / "run", tmp / "data",
                "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2",
                "trainer.log_every_n_steps=1", "trainer.val_every_n_steps=100",
            )
        )  # fmt: skip
    assert code == 0, err.getvalue()
    return {"run": tmp / "run", "data": tmp / "data", "stderr": err.getvalue()}


@pytest.fixture(scope="module")
def export(trained) -> Path:
    return trained["run"] / "checkpoint"


@pytest.fixture(scope="module")
def model(export):
    return archs.load_pretrained(export)


def test_warmup_longer_than_the_run_is_clamped_with_a_notice(trained):
    notices = [ln for ln in trained["stderr"].splitlines() if ln.startswith("notice:")]
    assert notices == [
        "notice: optim.warmup_steps=100 is not shorter than trainer.max_steps=4: "
        "warm-up clamped to 3 steps"
    ]
    assert "warmup_steps: 3" in (trained["run"] / "config.yaml").read_text()


# --- checkpoints ---------------------------------------------------------------------


def _weights(d: Path) -> Path:
    return d / "model.safetensors"


def _tensors(d: Path) -> dict[str, torch.Tensor]:
    # copies: load_file maps the file, which is about to be overwritten
    return {k: v.clone() for k, v in load_file(_weights(d)).items()}


def _rewrite(d: Path, edit) -> None:
    """Write model.safetensors again with edit(tensors) applied (no digest)."""
    tensors = _tensors(d)
    edit(tensors)
    save_file(tensors, _weights(d), metadata={"format": "pt"})


def _truncate(n):
    return lambda d: _weights(d).write_bytes(_weights(d).read_bytes()[:n])


def _half(d):
    data = _weights(d).read_bytes()
    _weights(d).write_bytes(data[: len(data) // 2])


def _flip_data_bit(d):
    data = bytearray(_weights(d).read_bytes())
    data[-100] ^= 0x01  # low mantissa bit of a weight: stays finite
    _weights(d).write_bytes(bytes(data))


def _flip_header_brace(d):
    data = bytearray(_weights(d).read_bytes())
    data[8] = ord("[")
    _weights(d).write_bytes(bytes(data))


def _huge_header_length(d):
    data = _weights(d).read_bytes()
    _weights(d).write_bytes(struct.pack("<Q", 1 << 40) + data[8:])


def _pickle(d):
    _weights(d).write_bytes(pickle.dumps({"W_E.weight": [0.0] * 8}))


def _torch_zip(d):
    torch.save(_tensors(d), _weights(d))


def _wrong_shape(d):
    _rewrite(d, lambda t: t.update({"W_E.weight": t["W_E.weight"][:-3].contiguous()}))


def _missing_tensor(d):
    _rewrite(d, lambda t: t.pop("blocks.1.mlp.W_out.weight"))


def _extra_tensor(d):
    _rewrite(d, lambda t: t.update({"blocks.7.mlp.W_in.weight": torch.zeros(2, 2)}))


def _int_dtype(d):
    _rewrite(d, lambda t: t.update({"ln_final.w": t["ln_final.w"].long()}))


def _nan_weight(d):
    def edit(t):
        t["blocks.0.attn.W_Q.weight"][0, 0] = float("nan")

    _rewrite(d, edit)


def _config_edit(old: str, new: str):
    def edit(d):
        text = (d / "config.yaml").read_text()
        assert old in text
        (d / "config.yaml").write_text(text.replace(old, new, 1))

    return edit


def _config_text(text: str):
    return lambda d: (d / "config.yaml").write_text(text)


def _other_tokenizer(d):
    words = {f"w{i}": i for i in range(430)}
    Tokenizer(WordLevel(words, unk_token="w0")).save(str(d / "tokenizer.json"))


def _shuffled_tokenizer(d):
    """The same tokens and size, two ids swapped: only the recorded digest tells."""
    data = json.loads((d / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (d / "tokenizer.json").write_text(json.dumps(data))


def _remove(name):
    return lambda d: (d / name).unlink()


# (id, corruption, file named, fragment, exit code); every one refused by `glassbox
# eval` in one line and by archs.load_pretrained with a CheckpointError naming the file
CHECKPOINT_CASES = [
    ("truncated", _half, "model.safetensors", "truncated", 1),
    ("truncated_to_4_bytes", _truncate(4), "model.safetensors", "too short", 1),
    ("emptied", _truncate(0), "model.safetensors", "empty", 1),
    ("bit_flip_in_data", _flip_data_bit, "model.safetensors", "SHA-256", 1),
    ("bit_flip_in_header", _flip_header_brace, "model.safetensors", "not valid JSON", 1),
    ("header_length", _huge_header_length, "model.safetensors", "header length", 1),
    ("pickle_renamed", _pickle, "model.safetensors", "pickle", 1),
    ("torch_zip_renamed", _torch_zip, "model.safetensors", "zip archive", 1),
    ("wrong_shape", _wrong_shape, "model.safetensors", "tensor W_E.weight has shape", 1),
    ("missing_tensor", _missing_tensor, "model.safetensors", "blocks.1.mlp.W_out.weight is missing", 1),
    ("extra_tensor", _extra_tensor, "model.safetensors", "blocks.7.mlp.W_in.weight", 1),
    ("int_dtype", _int_dtype, "model.safetensors", "ln_final.w is I64", 1),
    ("nan_weight", _nan_weight, "model.safetensors", "blocks.0.attn.W_Q.weight holds 1 non-finite", 1),
    ("weights_missing", _remove("model.safetensors"), "model.safetensors", "missing", 1),
    ("d_model_disagrees", _config_edit("d_model: 64", "d_model: 32"), "model.safetensors", "d_model=32", 1),
    ("config_malformed", _config_text("model: [unclosed\n"), "config.yaml", "not valid YAML", 1),
    ("config_unknown_key", _config_edit("d_model: 64", "dmodel: 64"), "config.yaml", "unknown key model.dmodel", 1),
    ("config_wrong_type", _config_edit("d_model: 64", "d_model: big"), "config.yaml", "model.d_model", 1),
    ("config_bad_value", _config_edit("n_heads: 4", "n_heads: 5"), "config.yaml", "n_heads=5", 1),
    ("config_negative_eps", _config_edit("norm_eps: 1.0e-05", "norm_eps: -1.0"), "config.yaml", "model.norm_eps=-1.0", 1),
    ("config_no_model", _config_text("data: {}\n"), "config.yaml", "no model: section", 1),
    ("config_empty", _config_text("# nothing\n"), "config.yaml", "is empty", 1),
    ("config_a_list", _config_text("- 1\n- 2\n"), "config.yaml", "expected a mapping", 1),
    ("tokenizer_of_another_vocab", _other_tokenizer, "tokenizer.json", "430 tokens", 1),
    ("tokenizer_not_json", lambda d: (d / "tokenizer.json").write_text("{oops"), "tokenizer.json", "not a tokenizers JSON", 1),
    ("tokenizer_ids_shuffled", _shuffled_tokenizer, "tokenizer.json", "SHA-256", 1),
]  # fmt: skip


@pytest.fixture
def corrupt(export, tmp_path):
    def make(fn) -> Path:
        d = tmp_path / "ckpt"
        shutil.copytree(export, d)
        fn(d)
        return d

    return make


@pytest.mark.parametrize(
    "corruption, file, fragment, code",
    [c[1:] for c in CHECKPOINT_CASES],
    ids=[c[0] for c in CHECKPOINT_CASES],
)
def test_bad_checkpoint_is_one_line(corrupt, capsys, corruption, file, fragment, code):
    d = corrupt(corruption)
    before = tree(d.parent)
    with pytest.raises(CheckpointError) as e:
        archs.load_pretrained(d)
    assert Path(e.value.file) == d / file and fragment in str(e.value)
    assert "\n" not in str(e.value)
    assert_refused(*cli(capsys, "eval", d), code, str(d / file), fragment)
    assert tree(d.parent) == before


def test_the_checks_pass_a_good_checkpoint_and_keep_it_exact(export, model):
    # the same weights, the same logits: the checks reject nothing they should pass
    x = torch.randint(0, model.cfg.vocab_size, (2, 7))
    again = archs.load_pretrained(export)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "{d}", "copy 1 2 ="],
        ["export", "{d}", "--to", "hf", "{out}"],
        ["analyze", "{d}", "--out", "{out}"],
    ],
    ids=["generate", "export", "analyze"],
)
@pytest.mark.parametrize(
    "corruption, fragment",
    [(_half, "truncated"), (_config_edit("d_model: 64", "dmodel: 64"), "model.dmodel")],
    ids=["truncated", "unknown_key"],
)
def test_every_command_refuses_a_bad_checkpoint_in_one_line(
    corrupt, tmp_path, capsys, command, corruption, fragment
):
    d = corrupt(corruption)
    before = tree(tmp_path)
    argv = [a.format(d=d, out=tmp_path / "out") for a in command]
    assert_refused(*cli(capsys, *argv), 1, str(d), fragment)
    assert tree(tmp_path) == before  # no export or analysis folder written


# (id, argv after the command, exit code, fragments)
PATH_CASES = [
    ("no_such_dir", ["{tmp}/nope"], 1, ["no checkpoint directory"]),
    ("not_a_checkpoint_dir", ["{tmp}"], 1, ["no config.yaml"]),
    ("the_weights_file", ["{tmp}/ckpt/model.safetensors"], 1, ["is a file", "config.yaml"]),
    ("unreachable_hub_id", ["someone/does-not-exist"], 1, ["someone/does-not-exist", "hub could not be reached", "./runs/dense/checkpoint"]),
    ("bad_data_section", ["{tmp}/data_section"], 2, ["DataConfig", "foo"]),
    ("metrics_not_json", ["{tmp}/metrics"], 1, ["metrics.json", "not valid JSON"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, code, fragments", [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES]
)
def test_bad_checkpoint_paths_are_one_line(
    export, tmp_path, capsys, monkeypatch, argv, code, fragments
):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network is ever tried
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    shutil.copytree(export, tmp_path / "ckpt")
    shutil.copytree(export, tmp_path / "data_section")
    text = (tmp_path / "data_section" / "config.yaml").read_text()
    assert "\ndata:\n" in text
    (tmp_path / "data_section" / "config.yaml").write_text(
        text.replace("\ndata:\n", "\ndata:\n  foo: 1\n")
    )
    shutil.copytree(export, tmp_path / "metrics")
    (tmp_path / "metrics" / "metrics.json").write_text("{not json")
    before = tree(tmp_path)
    args = [a.format(tmp=tmp_path) for a in argv]
    if args[0].endswith("metrics"):  # read after evaluating: the Python API, then the CLI
        with pytest.raises(CheckpointError, match="metrics.json"):
            archs.checkpoint.read_metrics(args[0])
        args += ["--max-batches", "1"]
    assert_refused(*cli(capsys, "eval", *args), code, *fragments)
    assert tree(tmp_path) == before


# --- configs -------------------------------------------------------------------------

# (override(s), the key named); each refused by `glassbox train` with exit code 2
CONFIG_CASES = [
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.lr=-0.001", "optim.lr"),
    ("optim.lr=0", "optim.lr"),
    ("optim.beta1=1.5", "optim.beta1"),
    ("optim.beta2=1.0", "optim.beta2"),
    ("optim.beta2=-0.1", "optim.beta2"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.weight_decay=nan", "optim.weight_decay"),
    ("optim.eps=0", "optim.eps"),
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio"),
    ("optim.warmup_steps=-5", "optim.warmup_steps"),
    ("model.norm_eps=-1e-5", "model.norm_eps"),
    ("model.init_std=-0.02", "model.init_std"),
    ("model.init_std=nan", "model.init_std"),
    ("model.rope_theta=0", "model.rope_theta"),
    ("model.pad_token_id=-1", "model.pad_token_id"),
    ("model.d_model=big", "model.d_model"),
    ("model.dmodel=64", "model.dmodel"),
    ("model.n_heads=5", "model.d_model"),
    ("model.n_kv_heads=3", "model.n_kv_heads"),
    ("model.ffn.kind=conv", "model.ffn.kind"),
    ("model.ffn.d_ff=0", "model.ffn.d_ff"),
    ("model.ffn.activation=tanh", "model.ffn.activation"),
    ("model.ffn.kind=moe model.ffn.moe.load_balance_weight=inf", "model.ffn.moe.load_balance_weight"),
    ("model.ffn.kind=moe model.ffn.moe.k=0", "model.ffn.moe.k"),
    ("model.ffn.kind=transcoder model.ffn.transcoder.l0_weight=nan", "model.ffn.transcoder.l0_weight"),
    ("model.ffn.kind=transcoder model.ffn.transcoder.aux_k_weight=-1", "model.ffn.transcoder.aux_k_weight"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.max_steps=2.5", "trainer.max_steps"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val"),
    ("trainer.limit_val_batches=-1", "trainer.limit_val_batches"),
    ("trainer.keep_checkpoints=-2", "trainer.keep_checkpoints"),
    ("trainer.val_every_n_steps=0", "trainer.val_every_n_steps"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("trainer.accelerator=quantum", "trainer.accelerator"),
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.devices=two", "trainer.devices"),
    ("trainer.precision=fp8", "trainer.precision"),
    ("trainer.loggers=[wandb]", "trainer.loggers"),
    ("trainer.cpu_threads=-1", "trainer.cpu_threads"),
    ("run.seed=-1", "run.seed"),
    ("run.eval_max_batches=-1", "run.eval_max_batches"),
    ("run.resume=yesterday", "run.resume"),
    ("run.resume=last", "last.ckpt"),
    ("run.resume={tmp}/missing.ckpt", "missing.ckpt"),
    ("run.resume={tmp}/junk.ckpt", "not a torch checkpoint"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.seed=-1", "data.seed"),
    ("data.mix.copy=nan", "data.mix.copy"),
    ("data.loss_on=some", "data.loss_on"),
    ("data.modadd.train_fraction=1.5", "data.modadd.train_fraction"),
    ("data.dyck.p_open=nan", "data.dyck.p_open"),
    ("tools.calculator_max_digits=0", "tools.calculator_max_digits"),
    ("model.d_model=[1,2", "cannot parse"),
    ("trainer.max_steps", "override"),
    ("=5", "override"),
    ("model=dense", "model='dense': is a section"),
    ("data.pack_length=1000000000", "data.pack_length"),
    ("run.resume={tmp}/state.ckpt", "not a Lightning checkpoint"),
    # found once the data is built (from the module's cache) or the Trainer is made:
    # these run with FAST's small data, the others need no data
    ("data.pack_length=8", "the longest train example"),
    ("model.max_seq_len=8", "model.max_seq_len"),
    ("model.vocab_size=10", "model.vocab_size"),
    ("trainer.strategy=bogus", "trainer.strategy='bogus'"),
]  # fmt: skip


NEED_DATA = {c[0] for c in CONFIG_CASES[-4:]}


@pytest.mark.parametrize("overrides, key", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_line_and_writes_nothing(trained, tmp_path, capsys, overrides, key):
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.ckpt")  # torch, not Lightning
    before = tree(tmp_path)
    extra = overrides.format(tmp=tmp_path).split()
    if overrides in NEED_DATA:
        argv = run_args(tmp_path / "run", trained["data"], *extra)
    else:  # refused by load_config: FAST's overrides would only slow the case down
        argv = ["train", "configs/dense.yaml", f"run.out_dir={tmp_path / 'run'}", *extra]
    err = cli(capsys, *argv)
    assert_refused(*err, 2, key.format(tmp=tmp_path))
    assert tree(tmp_path) == before  # no run directory


# (file content, fragment); `glassbox train FILE` with exit code 2
CONFIG_FILE_CASES = [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("trainer: {max_steps: [1\n", "not valid YAML"),
    ("- model\n- data\n", "YAML mapping"),
    ("modle: {d_model: 64}\n", "modle"),
    ("defaults:\n  - model: nope\n", "defaults.model"),
    ("defaults:\n  - modle: dense\n", "defaults.modle"),
    ("optim:\n  lr: .nan\n", "optim.lr"),
]


@pytest.mark.parametrize(
    "text, fragment", CONFIG_FILE_CASES, ids=[f"file_{i}" for i in range(len(CONFIG_FILE_CASES))]
)
def test_bad_config_file_is_one_line(tmp_path, capsys, text, fragment):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    before = tree(tmp_path)
    code, err = cli(capsys, "train", cfg, f"run.out_dir={tmp_path / 'run'}")
    assert_refused(code, err, 2, fragment)
    assert tree(tmp_path) == before


def test_missing_config_file_is_named(tmp_path, capsys):
    assert_refused(*cli(capsys, "train", tmp_path / "nope.yaml"), 2, "nope.yaml", "no such file")


def test_bad_config_keeps_an_existing_run_intact(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    before = tree(run)
    for bad in (["optim.lr=nan"], ["run.resume=last", "trainer.strategy=bogus"]):
        code, err = cli(capsys, *run_args(run, trained["data"], *bad))
        assert_refused(code, err, 2, bad[-1].split("=")[0])
    assert tree(run) == before


# --- prompts -------------------------------------------------------------------------

LONG_PROMPT = "copy " + " ".join(["3"] * 70) + " ="  # 72 words + <bos>: 73 tokens

# (argv after the checkpoint, fragments); `glassbox generate` with exit code 2
PROMPT_CASES = [
    (["copy 1 2 =", "--max-new-tokens", "-1"], ["max_new_tokens=-1", ">= 1"]),
    (["copy 1 2 =", "--max-new-tokens", "0"], ["max_new_tokens=0"]),
    (["copy 1 2 =", "--temperature", "nan"], ["temperature=nan", "finite"]),
    (["copy 1 2 =", "--temperature", "inf"], ["temperature=inf"]),
    (["copy 1 2 =", "--temperature", "-1"], ["temperature=-1.0"]),
    (["copy 1 2 =", "--top-k", "0"], ["top_k=0"]),
    (["copy 1 2 =", "--top-k", "-3"], ["top_k=-3"]),
    ([LONG_PROMPT], ["prompt='73 tokens'", "10 tokens too long", f"max_seq_len={MAX_SEQ_LEN}"]),
    (["copy " + " ".join(["3"] * 62)], ["prompt='64 tokens'", "1 token too long"]),
]


@pytest.mark.parametrize(
    "argv, fragments", PROMPT_CASES, ids=[f"cli_{i}" for i in range(len(PROMPT_CASES))]
)
def test_bad_generation_arguments_are_one_line(export, capsys, argv, fragments):
    before = tree(export)
    assert_refused(*cli(capsys, "generate", export, *argv, "--no-tools"), 2, *fragments)
    assert tree(export) == before


# (kwargs, fragment); model.generate and the tool runtime raise ArgumentError
API_CASES = [
    (dict(max_new_tokens=-1), "max_new_tokens=-1"),
    (dict(max_new_tokens=2.5), "max_new_tokens=2.5"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(top_k=0), "top_k=0"),
    (dict(max_new_tokens=60), "is 2 over the model's context"),  # 6-token prompt
    (dict(prompt=[[1, 2, 10_000]]), "prompt token id=10000"),
    (dict(prompt=[[]]), "at least one token"),
]


@pytest.mark.parametrize(
    "kwargs, fragment", API_CASES, ids=[f"api_{i}" for i in range(len(API_CASES))]
)
@pytest.mark.parametrize("runtime", ["generate", "generate_with_tools"])
def test_bad_generation_arguments_in_the_python_api(model, runtime, kwargs, fragment):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", [[1, 2, 3, 4, 5, 6]])
    kwargs.setdefault("max_new_tokens", 4)
    with pytest.raises(ArgumentError) as e:
        if runtime == "generate":
            model.generate(prompt, **kwargs)
        else:
            registry = ToolRegistry([Calculator()])
            generate_with_tools(model, prompt, model.tokenizer, registry, **kwargs)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_generation_at_the_edge_of_the_context_still_runs(model):
    out = model.generate([[1] * (MAX_SEQ_LEN - 3)], max_new_tokens=3)
    assert len(out.continuations[0]) == 3


# --- divergence and interrupted writes -----------------------------------------------


def test_divergence_with_no_checkpoint_says_so(trained, tmp_path, capsys):
    code, err = cli(
        capsys,
        *run_args(
            tmp_path / "run", trained["data"],
            "trainer.max_steps=30", "optim.lr=1e6", "optim.warmup_steps=0",
            "trainer.val_every_n_steps=100",
        ),
    )  # fmt: skip
    ours = [ln for ln in err.splitlines() if ln.startswith("glassbox train:")]
    assert code == 1 and len(ours) == 1 and "Traceback" not in err, err
    assert "stopped at step" in ours[0] and "(loss " in ours[0]
    assert "no checkpoint was written" in ours[0].lower()
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # truthful: there is none


def test_divergence_names_the_last_checkpoint_that_exists(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    code, err = cli(
        capsys,
        *run_args(
            run, trained["data"],
            "run.resume=last", "trainer.max_steps=30", "optim.lr=1e6",
            "trainer.checkpoint_every_n_steps=2", "trainer.val_every_n_steps=100",
        ),
    )  # fmt: skip
    ours = [ln for ln in err.splitlines() if ln.startswith("glassbox train:")]
    assert code == 1 and len(ours) == 1 and "Traceback" not in err, err
    steps = sorted(int(p.stem.split("=")[1]) for p in (run / "checkpoints").glob("step=*.ckpt"))
    assert f"{run / 'checkpoints' / 'last.ckpt'} (step {steps[-1]})" in ours[0]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == steps[-1]  # the step named is last.ckpt's
    assert "optim.lr 0.003 -> 1000000.0" in err  # the resume notice


@pytest.fixture(scope="module")
def resumed(trained, tmp_path_factory):
    """The trained run resumed to step 8 with optim.lr=1e-5, after a kill had left
    temporary files in checkpoints/ and beside the export."""
    run = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(trained["run"], run)
    stale = [
        run / "checkpoints" / ".last.ckpt.tmp-4242",
        run / "checkpoints" / ".step=6.ckpt.tmp-4242",
        run / ".checkpoint.tmp-abc123" / "model.safetensors",
        run / ".checkpoint.old-def456" / "config.yaml",
    ]
    for f in stale:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"half written")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            run_args(
                run, trained["data"], "run.resume=last", "trainer.max_steps=8",
                "optim.lr=1e-5", "optim.warmup_steps=2", "trainer.log_every_n_steps=1",
                "trainer.val_every_n_steps=100",
            )
        )  # fmt: skip
    assert code == 0, err.getvalue()
    return {"run": run, "stderr": err.getvalue(), "stale": stale}


def test_resume_applies_the_new_learning_rate(resumed):
    run = resumed["run"]
    rows = [ln.split(",") for ln in (run / "logs" / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    lr, step = header.index("train/lr"), header.index("step")
    logged = {int(r[step]): float(r[lr]) for r in rows[1:] if r[lr]}
    resumed_steps = [s for s in logged if s >= 4]
    assert resumed_steps == [4, 5, 6, 7]
    for s in resumed_steps:
        assert logged[s] == pytest.approx(1e-5 * cosine_with_warmup(s, 2, 8, 0.1), rel=1e-6)
    assert "notice: resuming with the config's optim.lr 0.003 -> 1e-05" in resumed["stderr"]


def test_interrupted_writes_are_removed_on_the_next_start(resumed):
    run = resumed["run"]
    assert not [f for f in resumed["stale"] if f.exists()]
    assert not list(run.glob(".checkpoint.*")) and not list(run.glob("checkpoints/.*"))
    archs.load_pretrained(run / "checkpoint")  # the new export is whole


def test_an_export_caught_between_its_two_renames_is_restored(export, tmp_path):
    target = tmp_path / "checkpoint"
    shutil.copytree(export, tmp_path / ".checkpoint.old-xyz")  # the previous good one
    (tmp_path / ".checkpoint.tmp-abc").mkdir()
    touched = clean_interrupted_writes(target)
    assert target in touched and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert tree(target) == tree(export)


def test_stale_checkpoint_temp_files_are_removed(tmp_path):
    keep = tmp_path / "last.ckpt"
    keep.write_bytes(b"good")
    stale = tmp_path / ".last.ckpt.tmp-99"
    stale.write_bytes(b"half")
    assert AtomicCheckpointIO.clean(tmp_path) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_json_is_not_a_checkpoint(tmp_path):
    # a JSON file named model.safetensors: its first 8 bytes read as a huge header length
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.yaml").write_text("model: {vocab_size: 10}\n")
    (d / "model.safetensors").write_text(json.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="header length"):
        archs.load_pretrained(d)


# --- nothing lost: where commands write ----------------------------------------------


@pytest.fixture
def shipped(export, tmp_path, monkeypatch):
    """A copy of the trained checkpoint as the shipped `glassbox/tiny`, with legacy
    dashboards (no marker) in its features/."""
    root = tmp_path / "shipped"
    shutil.copytree(export, root / "tiny")
    (root / "tiny" / "features").mkdir()
    for name in ("index.json", "index.html", "layer0.json"):
        (root / "tiny" / "features" / name).write_text("{}")
    monkeypatch.setenv("GLASSBOX_CHECKPOINTS", str(root))
    return root


def _user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "keep.txt").write_text("the user's notes")
    return d


# (id, argv after `glassbox`, exit code, fragments); {ck}: a copy of the checkpoint,
# {mine}: a folder of the user's, {file}: a file, {shipped}: GLASSBOX_CHECKPOINTS
WRITE_CASES = [
    ("export_hf_onto_the_checkpoint", ["export", "{ck}", "--to", "hf", "{ck}"], 1, ["{ck}", "the checkpoint glassbox export reads"]),
    ("export_features_onto_the_checkpoint", ["export", "{ck}", "--to", "features", "{ck}"], 1, ["{ck}", "reads"]),
    ("export_onto_the_checkpoints_parent", ["export", "{ck}", "--to", "hf", "{tmp}"], 1, ["holds {ck}"]),
    ("export_features_into_users_files", ["export", "{ck}", "--to", "features", "{mine}"], 1, ["{mine}", "keep.txt", "--force"]),
    ("export_hf_into_users_files", ["export", "{ck}", "--to", "hf", "{mine}"], 1, ["{mine}", "keep.txt", "--force"]),
    ("export_over_a_file", ["export", "{ck}", "--to", "features", "{file}"], 1, ["{file}", "is a file"]),
    ("export_into_the_shipped", ["export", "glassbox/tiny", "--to", "hf", "{shipped}/hf"], 1, ["{shipped}/hf", "only `glassbox ship` writes"]),
    ("analyze_into_the_shipped", ["analyze", "glassbox/tiny", "--out", "{shipped}/tiny/analysis"], 1, ["{shipped}/tiny/analysis", "shipped checkpoints"]),
    ("analyze_into_users_files", ["analyze", "{ck}", "--out", "{mine}"], 1, ["{mine}", "keep.txt"]),
    ("analyze_examples_0", ["analyze", "{ck}", "--examples", "0"], 2, ["--examples=0"]),
    ("analyze_examples_negative", ["analyze", "{ck}", "--examples", "-1"], 2, ["--examples=-1"]),
    ("features_examples_0", ["export", "{ck}", "--to", "features", "{tmp}/f", "--examples", "0"], 2, ["--examples=0"]),
    ("ship_to_a_file", ["ship", "{tmp}", "--to", "{file}"], 1, ["{file}", "is a file"]),
    ("ship_without_a_report", ["ship", "{mine}"], 2, ["{mine}/report.json", "no such file"]),
    ("train_into_a_file", ["train", "configs/dense.yaml", "run.out_dir={file}"], 1, ["{file}", "is a file"]),
    ("train_into_users_files", ["train", "configs/dense.yaml", "run.out_dir={cfg_dir}"], 1, ["{cfg_dir}", "config.yaml", "did not write"]),
    ("train_into_the_shipped", ["train", "configs/dense.yaml", "run.out_dir={shipped}/run"], 1, ["{shipped}/run", "shipped"]),
    ("eval_5000_character_name", ["eval", "glassbox/" + "a" * 5000], 1, ["longer than a path can be"]),
    ("eval_256_character_component", ["eval", "{tmp}/" + "a" * 256], 1, ["longer than a path can be"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, code, fragments", [c[1:] for c in WRITE_CASES], ids=[c[0] for c in WRITE_CASES]
)
def test_no_command_writes_over_what_it_did_not_create(
    export, shipped, tmp_path, capsys, argv, code, fragments
):
    ck = tmp_path / "ck"
    shutil.copytree(export, ck)
    mine = _user_dir(tmp_path)
    (tmp_path / "file").write_text("a file of the user's")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.yaml").write_text("my: own config\n")
    names = dict(ck=ck, mine=mine, file=tmp_path / "file", shipped=shipped, tmp=tmp_path)
    names["cfg_dir"] = tmp_path / "cfg"
    before = tree(tmp_path)
    args = [a.format(**names) for a in argv]
    assert_refused(*cli(capsys, *args), code, *(f.format(**names) for f in fragments))
    assert tree(tmp_path) == before  # the checkpoint, the user's files, the shipped: intact


def test_force_keeps_the_users_files_and_a_second_export_replaces_its_own(export, tmp_path, capsys):
    mine = _user_dir(tmp_path)
    assert cli(capsys, "export", export, "--to", "hf", mine, "--force")[0] == 0
    assert (mine / "keep.txt").read_text() == "the user's notes"
    assert (mine / "config.json").is_file() and (mine / ".glassbox").is_file()
    again = tmp_path / "again"
    for _ in range(2):  # its own folder, replaced whole without --force
        assert cli(capsys, "export", export, "--to", "hf", again)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "mine"]


def test_a_checkpoints_own_features_folder_is_rewritten(export, shipped, tmp_path, capsys):
    """`make ship` exports glassbox/<name>'s dashboards into its features/, written
    before the marker existed (known by its index): rewritten, nothing else touched."""
    before = {k: v for k, v in tree(shipped).items() if not k.startswith("tiny/features")}
    args = ["export", "glassbox/tiny", "--to", "features", shipped / "tiny" / "features"]
    code, err = cli(capsys, *args, "--examples", "8")
    assert code == 0, err
    assert json.loads((shipped / "tiny" / "features" / "index.json").read_text())
    after = tree(shipped)
    assert {k: v for k, v in after.items() if not k.startswith("tiny/features")} == before


def test_written_folders_take_the_umask(trained, tmp_path, capsys):
    """Not tempfile's 0o700 / 0o600: a teammate, a wheel or a web server reads them."""
    mask = current_umask()
    out = tmp_path / "hf"
    assert cli(capsys, "export", trained["run"] / "checkpoint", "--to", "hf", out)[0] == 0
    for d in (trained["run"] / "checkpoint", out):  # train's export, then an HF export
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask, d
        for f in d.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f


def test_analyze_of_a_shipped_checkpoint_writes_in_the_working_directory(
    shipped, tmp_path, monkeypatch, capsys
):
    from glassbox.cli import _analysis_dir, build_parser

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["analyze", "glassbox/tiny"])
    out = _analysis_dir(args, archs.checkpoint.resolve_checkpoint("glassbox/tiny"))
    assert out == Path("analysis-tiny") and "analysis-tiny" in capsys.readouterr().out
    (tmp_path / "x" / "ck").mkdir(parents=True)  # a local checkpoint: beside it, as before
    args = build_parser().parse_args(["analyze", str(tmp_path / "x" / "ck")])
    assert _analysis_dir(args, tmp_path / "x" / "ck") == tmp_path / "x" / "analysis"


@pytest.mark.parametrize("what", ["parent", "folder"])
def test_a_read_only_target_is_one_line(export, tmp_path, capsys, monkeypatch, what):
    import glassbox.archs.writes as writes

    target = tmp_path / "ro" / "out"
    target.mkdir(parents=True)
    read_only = target if what == "folder" else target.parent
    real_access = os.access
    monkeypatch.setattr(  # root writes anywhere: play the unprivileged user
        writes.os, "access", lambda p, m: Path(p) != read_only and real_access(p, m)
    )
    before = tree(tmp_path)
    assert_refused(*cli(capsys, "export", export, "--to", "hf", target), 1, "read-only")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "env, fragment", [("absent", "does not exist"), ("file", "is a file")], ids=["missing", "file"]
)
def test_glassbox_checkpoints_is_named(tmp_path, capsys, monkeypatch, env, fragment):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GLASSBOX_CHECKPOINTS", str(tmp_path / env))
    assert_refused(*cli(capsys, "eval", "glassbox/dense"), 1, "GLASSBOX_CHECKPOINTS=", fragment)


COMPARE_FILES = [
    ("duplicate_key", "out_dir: a\nout_dir: b\n", "duplicate key out_dir at line 2"),
    ("malformed", "seeds: [0\n", "not valid YAML"),
    ("checkpoints_a_list", "architectures: {dense: configs/dense.yaml}\ncheckpoints: [a]\n", "checkpoints=['a']"),
]  # fmt: skip


@pytest.mark.parametrize(
    "text, fragment", [c[1:] for c in COMPARE_FILES], ids=[c[0] for c in COMPARE_FILES]
)
def test_bad_compare_file_is_one_line(tmp_path, capsys, text, fragment):
    (tmp_path / "c.yaml").write_text(text)
    before = tree(tmp_path)
    assert_refused(*cli(capsys, "compare", tmp_path / "c.yaml"), 2, fragment)
    assert tree(tmp_path) == before


def test_compare_refuses_a_checkpoint_under_another_architectures_key(export, tmp_path, capsys):
    """The dense checkpoint under `moe`: scored, it would be reported as a MoE."""
    overrides = [
        f"out_dir={tmp_path / 'report'}", "seeds=[0]",
        "architectures={dense: configs/dense.yaml, moe: configs/moe.yaml}",
        f"checkpoints={{moe: {export}}}",
    ]  # fmt: skip
    code, err = cli(capsys, "compare", "configs/compare.yaml", *overrides)
    assert_refused(code, err, 2, "checkpoints.moe", "model.ffn.kind=dense", "model.ffn.kind=moe")
    assert not (tmp_path / "report").exists()


def test_compare_refuses_a_checkpoint_of_other_data(export):
    from glassbox.compare import CheckpointRun, CompareConfig, check_is_architecture

    run = CheckpointRun("dense", str(export), Path("unused"))
    run.cfg.data.source = "text"
    cc = CompareConfig(architectures={"dense": "configs/dense.yaml"})
    with pytest.raises(archs.ConfigError, match="checkpoints.dense.*data.source=text"):
        check_is_architecture(run, cc)


def test_ship_names_a_garbage_scores_file(tmp_path):
    from glassbox.ship import read_report

    (tmp_path / "report.json").write_text("{garbage")
    with pytest.raises(ArgumentError, match=r"--scores=.*report.json.*not a report.json"):
        read_report(tmp_path / "report.json", "--scores")


def _limited(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`glassbox argv` in a process whose files cannot grow past 200 kB (ulimit -f)."""
    limit = 200_000
    return subprocess.run(
        [sys.executable, "-m", "glassbox.cli", *map(str, argv)],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        capture_output=True, text=True, cwd=cwd,
    )  # fmt: skip


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(export, tmp_path):
    done = _limited(["export", export, "--to", "hf", tmp_path / "hf"], Path.cwd())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(tmp_path / "hf") in lines[-1] and "free on" in lines[-1]
    assert list(tmp_path.iterdir()) == []  # no half-written folder


# a training that sends itself SIGTERM at its third step, as a machine's shutdown does
_SIGTERM_AT_STEP_2 = """
import os, signal, sys
from glassbox.cli import main
from glassbox.training.module import LMModule
step = LMModule.training_step
def stopped(self, batch, i):
    if self.global_step == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return step(self, batch, i)
LMModule.training_step = stopped
sys.exit(main(sys.argv[1:]))
"""


def test_a_training_stopped_by_sigterm_fails_in_one_line_and_exports_nothing(trained, tmp_path):
    """Lightning ends a fit on SIGTERM with a SystemExit of no code: unhandled, the
    process exits 0 and a compare takes the run for trained. It exits 1 with one line
    that names the signal and the step (the step under way finishes: 3), and no
    checkpoint is exported."""
    argv = run_args(tmp_path / "run", trained["data"], "trainer.max_steps=50")
    done = subprocess.run(
        [sys.executable, "-c", _SIGTERM_AT_STEP_2, *argv], capture_output=True, text=True
    )
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "stopped by SIGTERM at step 3 of 50" in last and "nothing exported" in last
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_full_disk_during_training_is_one_line(trained, tmp_path):
    argv = run_args(tmp_path / "run", trained["data"], "trainer.max_steps=2")
    done = _limited(argv, Path.cwd())
    ours = [ln for ln in done.stderr.splitlines() if ln.startswith("glassbox train:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(ours) == 1 and str(tmp_path / "run") in ours[0] and "free on" in ours[0]
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("where", ["user_files", "a_file", "shipped"])
def test_compare_writes_only_a_folder_of_its_own(export, tmp_path, capsys, where):
    """compare's out_dir: a folder holding the user's files, a file, or a folder inside
    the shipped checkpoints is refused in one line naming it, and left as it was."""
    from glassbox.archs.checkpoint import shipped_dir

    out = {"user_files": tmp_path / "mine", "a_file": tmp_path / "notes.txt",
           "shipped": shipped_dir() / "dense" / "report"}[where]  # fmt: skip
    if where == "user_files":
        out.mkdir()
        (out / "keep.txt").write_text("the user's")
    if where == "a_file":
        out.write_text("the user's")
    before = tree(out.parent)
    overrides = [f"out_dir={out}", "seeds=[0]", "architectures={dense: configs/dense.yaml}",
                 f"checkpoints={{dense: {export}}}", "posthoc.enabled=false"]  # fmt: skip
    code, err = cli(capsys, "compare", "configs/compare.yaml", *overrides)
    line = assert_refused(code, err, 1, str(out))
    assert "--force" not in line  # compare has no --force: it is not offered
    assert tree(out.parent) == before


def test_compare_resumes_in_the_folder_an_interrupted_compare_left(tmp_path):
    """A compare stopped before its report leaves runs/ only: its folder is its own
    (known by what compare writes), and a user's file beside it is still refused."""
    from glassbox.archs.writes import OutputError, claim_output_dir
    from glassbox.compare import COMPARE

    out = tmp_path / "report"
    (out / "runs" / "dense-seed0").mkdir(parents=True)
    assert claim_output_dir(out, COMPARE) == []
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(OutputError, match="notes.txt"):
        claim_output_dir(out, COMPARE)


def test_a_new_scoring_version_rescores_without_retraining(monkeypatch):
    """A training run's key does not change with ANALYSIS_VERSION; a score's does."""
    from glassbox import results

    train = results.content_key("run config", {"a": 1}, scoring=False)
    score = results.content_key("scores", "x")
    monkeypatch.setattr(results, "ANALYSIS_VERSION", results.ANALYSIS_VERSION + 1)
    assert results.content_key("run config", {"a": 1}, scoring=False) == train
    assert results.content_key("scores", "x") != score
