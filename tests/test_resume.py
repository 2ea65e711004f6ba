"""Resumable scoring (analysis.resume): a part is computed once, saved, and read back
by the next call under the same key, never under another; nested parts, an
interrupted outer part, a damaged file."""

import json
import math

import pytest

from glassbox.analysis.resume import part, reused_seconds, saved_parts


def counted(value, calls: list):
    def fn():
        calls.append(1)
        return value

    return fn


def test_outside_saved_parts_a_part_is_its_function():
    value = {"a": (1, 2), "b": math.nan}
    assert part("x", lambda: value) is value  # not copied, nan and tuples kept
    assert reused_seconds() == 0.0


def test_a_saved_part_is_read_back_under_its_key_only(tmp_path):
    path, calls = tmp_path / "parts.json", []
    value = {"loss": 1.5, "pair": (1, 2), "undefined": math.nan, 3: "three"}
    with saved_parts(path, "k1"):
        got = part("scores", counted(value, calls))
    # as JSON holds it, computed or read back: nan stays nan until the report's end
    assert math.isnan(got.pop("undefined"))
    assert got == {"loss": 1.5, "pair": [1, 2], "3": "three"}
    assert json.loads(path.read_text())["key"] == "k1"
    with saved_parts(path, "k1") as store:
        again = part("scores", counted("recomputed", calls))
    assert math.isnan(again.pop("undefined")) and again == got
    assert len(calls) == 1 and store.reused_seconds >= 0
    with saved_parts(path, "k2"):  # another checkpoint or setting: computed afresh
        assert part("scores", counted("recomputed", calls)) == "recomputed"
    assert len(calls) == 2


def test_an_interrupted_outer_part_keeps_its_finished_inner_parts(tmp_path):
    path, calls = tmp_path / "parts.json", []

    def outer(fail: bool):
        a = part("a", counted({"x": 1}, calls))
        if fail:
            raise KeyboardInterrupt  # the machine stopped between a and b
        b = part("b", counted({"y": 2}, calls))
        return {**a, **b}

    with pytest.raises(KeyboardInterrupt), saved_parts(path, "k"):
        part("outer", lambda: outer(fail=True))
    assert set(json.loads(path.read_text())["parts"]) == {"outer/a"}
    with saved_parts(path, "k"):
        assert part("outer", lambda: outer(fail=False)) == {"x": 1, "y": 2}
    assert len(calls) == 2  # a once, b once
    # the outer part saved whole, its inner parts dropped
    assert set(json.loads(path.read_text())["parts"]) == {"outer"}
    with saved_parts(path, "k") as store:
        assert part("outer", lambda: pytest.fail("recomputed")) == {"x": 1, "y": 2}
    assert store.reused_seconds == json.loads(path.read_text())["parts"]["outer"]["seconds"]


def test_a_damaged_file_is_started_afresh_and_a_name_used_twice_is_refused(tmp_path):
    path, calls = tmp_path / "parts.json", []
    path.write_text('{"key": "k", "parts": {"a": {"val')  # a write cut short
    with saved_parts(path, "k") as store:
        assert part("a", counted(7, calls)) == 7
        with pytest.raises(ValueError, match="'a' is used twice"):
            part("a", counted(8, calls))
    assert calls == [1] and json.loads(path.read_text())["parts"]["a"]["value"] == 7
    store.remove()
    assert not path.exists()


def test_the_log_says_each_part_finished_and_what_a_resumption_read_back(tmp_path):
    path = tmp_path / "parts.json"
    with saved_parts(path, "k"):
        part("outer", lambda: {"a": part("a", lambda: 1)})
    with saved_parts(path, "k") as store:
        part("outer", lambda: pytest.fail("recomputed"))
        part("b", lambda: 2)
    store.remove()
    lines = [line.split(" ", 2)[2] for line in path.with_suffix(".log").read_text().splitlines()]
    assert lines[0] == "started (key k)"
    assert [line.split(":")[0] for line in lines[1:3]] == ["outer/a", "outer"]
    assert lines[3].startswith("resumed: 1 saved parts read back")  # outer alone: a dropped
    assert lines[4].startswith("b: ") and lines[5] == "saved whole"
    assert len(lines) == 6  # nothing said of the part read back but the resumption
