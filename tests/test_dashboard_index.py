"""The dashboards' index labels every unit with what it covers and can be sorted and
filtered: built from a shipped checkpoint's exported JSON (copied, not changed) and
driven in a headless browser where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from glassbox.analysis.dashboards import rebuild_index
from glassbox.archs.checkpoint import shipped_dir


@pytest.fixture
def features(tmp_path) -> Path:
    src = shipped_dir() / "transcoder" / "features"
    if not (src / "index.json").is_file():
        pytest.skip(f"no exported dashboards at {src}")
    shutil.copytree(src, tmp_path / "features")
    return tmp_path / "features"


def test_index_labels_every_unit_with_its_best_feature(features):
    page = rebuild_index(features).read_text()
    index = json.loads((features / "index.json").read_text())
    n_units = sum(lay["n_units"] for lay in index["layers"])
    assert page.count("<tr><td") == n_units
    layer = json.loads((features / index["layers"][0]["file"]).read_text())
    best = max(layer["features"], key=lambda r: r["featureMatch"]["f1"])
    fm = best["featureMatch"]
    row = re.search(rf"<tr><td>blocks\.0\.mlp</td><td data-v=\"{best['index']}\">.*?</tr>", page)
    assert row and fm["feature"] in row.group(0) and f"{fm['f1']:.3f}" in row.group(0)


# Filters by a feature name, sorts by F1 (twice: descending), and records what is shown.
DRIVE = """<script>
window.addEventListener("load", () => {
  const box = document.getElementById("filter");
  box.value = "%s"; box.dispatchEvent(new Event("input"));
  const f1 = [...document.querySelectorAll("#units th")].find(th => th.textContent === "F1");
  f1.click();
  const shown = [...document.querySelectorAll("#units tbody tr")].filter(r => !r.hidden);
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({
    count: document.getElementById("count").textContent,
    f1: shown.map(r => parseFloat(r.cells[3].dataset.v)),
    features: shown.map(r => r.cells[2].textContent),
  });
  document.body.appendChild(out);
});
</script>"""


def test_index_sorts_and_filters_in_a_browser(features):
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)  # fmt: skip
    if browser is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    page = rebuild_index(features).read_text()
    layer = json.loads((features / "layer0.json").read_text())["features"]
    feature = max(layer, key=lambda r: r["featureMatch"]["f1"])["featureMatch"]["feature"]
    driven = features / "driven.html"
    driven.write_text(page.replace("</body>", DRIVE % feature + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", driven.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S).group(1))
    assert probe["features"] and all(feature in f for f in probe["features"])
    assert int(probe["count"]) == len(probe["features"])
    assert probe["f1"] == sorted(probe["f1"], reverse=True)
