"""Weight-sparse checkpoints stored packed (archs/packed_masks.py): the layout on a
matrix written by hand, a matrix it must not pack, lossless round trips through
save_pretrained for every kind (tied embeddings and bf16 too), the size, and the
damaged files it refuses with one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from glassbox import archs
from glassbox.archs.checkpoint_checks import read_header
from glassbox.archs.errors import CheckpointError
from glassbox.archs.packed_masks import PACKED_KEY, pack_masked, unpack_masked
from glassbox.archs.weight_sparsity import apply_weight_sparsity, weight_masks
from tests.test_weight_sparsity import make_model

MASK = torch.tensor(
    [[True, False, False, True], [False, False, False, False], [True, True, False, False]]
)
WEIGHT = torch.tensor([[1.5, 0.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.25, 0.0, 0.0]])


def test_a_hand_written_matrix_packs_to_its_kept_values_and_bits():
    """Row-major kept values; bits lowest first: 1,0,0,1,0,0,0,0 is 0b1001 = 9 and
    1,1,0,0 (padded) is 0b11 = 3."""
    state = {"W.weight": WEIGHT, "W.weight_mask": MASK, "ln.w": torch.ones(4)}
    packed, meta = pack_masked(state)
    assert packed["W.weight"].tolist() == [1.5, -2.0, 3.0, 0.25]
    assert packed["W.weight_mask"].dtype == torch.uint8
    assert packed["W.weight_mask"].tolist() == [9, 3]
    assert torch.equal(packed["ln.w"], state["ln.w"])  # no mask: stored as it is
    assert json.loads(meta[PACKED_KEY]) == {"W.weight": [3, 4]}
    back = unpack_masked(packed, {"W.weight": [3, 4]}, "f")
    assert torch.equal(back["W.weight"], WEIGHT) and torch.equal(back["W.weight_mask"], MASK)


def test_a_matrix_with_a_weight_off_its_mask_is_not_packed():
    """Packing it would lose the 7.0 the mask does not keep: it stays dense."""
    weight = WEIGHT.clone()
    weight[1, 1] = 7.0
    packed, meta = pack_masked({"W.weight": weight, "W.weight_mask": MASK})
    assert meta == {}
    assert torch.equal(packed["W.weight"], weight) and packed["W.weight_mask"].dtype == torch.bool


@pytest.mark.parametrize("kind, tie", [("dense", False), ("moe", False), ("transcoder", False), ("dense", True)])  # fmt: skip
def test_every_kind_round_trips_bit_for_bit_and_smaller(tmp_path, kind, tie):
    """Each tensor back with its dtype and every bit, the outputs equal, the file about
    what a dense model of the non-zero count costs (here density 0.2)."""
    model = make_model(kind, tie=tie, include_embeddings=True)
    apply_weight_sparsity(model, 0.2)
    archs.save_pretrained(model, tmp_path / "ckpt")
    entries, metadata, _ = read_header(tmp_path / "ckpt" / "model.safetensors")
    assert set(json.loads(metadata[PACKED_KEY])) == set(weight_masks(model))
    loaded = archs.load_pretrained(tmp_path / "ckpt")
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    tokens = torch.randint(0, 40, (2, 12))
    torch.testing.assert_close(loaded(tokens), model.eval()(tokens), rtol=0, atol=0)
    if tie:
        assert loaded.W_U.weight is loaded.W_E.weight
    size = (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    dense_bytes = sum(t.numel() * t.element_size() for t in want.values())
    assert size < 0.5 * dense_bytes


def test_bf16_weights_round_trip_packed(tmp_path):
    """A bf16 model packs at 2 bytes a kept value and loads (as every checkpoint does)
    into a float32 model, each value exact."""
    model = make_model("dense")
    apply_weight_sparsity(model, 0.3)
    model.to(torch.bfloat16)
    archs.save_pretrained(model, tmp_path / "ckpt")
    entries, _, _ = read_header(tmp_path / "ckpt" / "model.safetensors")
    assert entries["blocks.0.attn.W_Q.weight"]["dtype"] == "BF16"
    got = archs.load_pretrained(tmp_path / "ckpt").state_dict()
    for name, t in model.state_dict().items():
        assert torch.equal(got[name], t.float() if t.is_floating_point() else t), name


@pytest.fixture
def packed_ckpt(tmp_path):
    model = make_model("dense")
    apply_weight_sparsity(model, 0.25)
    return archs.save_pretrained(model, tmp_path / "ckpt")


def _rewrite(ckpt, edit, meta_edit=None):
    """model.safetensors written again with edit(tensors), its metadata kept (but the
    digest, which would refuse any edit)."""
    f = ckpt / "model.safetensors"
    _, metadata, _ = read_header(f)
    tensors = {k: v.clone() for k, v in load_file(f).items()}
    edit(tensors)
    metadata = {k: v for k, v in metadata.items() if k != "glassbox.sha256"}
    if meta_edit:
        meta_edit(metadata)
    save_file(tensors, f, metadata=metadata)


NAME = "blocks.0.attn.W_Q.weight"


def _drop_value(t):
    t[NAME] = t[NAME][:-1].clone()


def _mask_as_bool(t):
    t[NAME + "_mask"] = torch.ones(32 * 32, dtype=torch.bool)


def _flip_mask_bit(t):
    t[NAME + "_mask"][0] ^= 1  # one connection more or fewer than values stored


def _unlist(m):
    m[PACKED_KEY] = "[1, 2]"


def _list_missing(m):
    m[PACKED_KEY] = json.dumps({**json.loads(m[PACKED_KEY]), "W_Q.nowhere": [2, 2]})


@pytest.mark.parametrize(
    "edit, meta_edit, fragment",
    [
        (_drop_value, None, f"tensor {NAME}: 255 values for the 256 set bits"),
        (_flip_mask_bit, None, f"tensor {NAME}: 256 values for the"),
        (_mask_as_bool, None, f"tensor {NAME}_mask is a packed mask: expected U8 [128]"),
        (lambda t: None, _unlist, f"metadata {PACKED_KEY} is not a JSON mapping"),
        (lambda t: None, _list_missing, "tensor W_Q.nowhere is listed as packed but not stored"),
    ],
)
def test_a_damaged_packed_file_is_one_line_naming_it(packed_ckpt, edit, meta_edit, fragment):
    _rewrite(packed_ckpt, edit, meta_edit)
    with pytest.raises(CheckpointError) as e:
        archs.load_pretrained(packed_ckpt)
    msg = str(e.value)
    assert "model.safetensors" in msg and fragment in msg and "\n" not in msg, msg


def test_weights_bytes_counts_a_packed_file_at_its_full_shape(tmp_path):
    """What scoring's order reads (glassbox.scheduling.expected_cost): a packed file
    counts the bytes its tensors take unpacked, as the same model saved dense does."""
    from safetensors.torch import save_model

    from glassbox.archs.checkpoint import weights_bytes

    model = make_model("moe")
    apply_weight_sparsity(model, 0.2)
    packed = archs.save_pretrained(model, tmp_path / "ckpt") / "model.safetensors"
    save_model(model, str(tmp_path / "dense.safetensors"))
    want = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weights_bytes(packed) == weights_bytes(tmp_path / "dense.safetensors") == want
    assert packed.stat().st_size < want / 2 and weights_bytes(tmp_path / "none") == 0
