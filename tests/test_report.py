"""report.md reads in a terminal and report.html in a browser: a headline table of at
most 8 columns, topic tables of at most 10 on a compare of every registry key over six
kinds, no "±" for one seed, every number of the tables in report.json; report.html
rendered by a real headless browser (Debian's chromium) with its plots drawn."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from matplotlib.image import imread

from glassbox.metrics import METRICS, expand
from glassbox.report import Report
from glassbox.report_tables import HEADLINE_MAX_COLUMNS
from glassbox.results import PostHocResult, RunResult

ARCHS = ("dense", "moe", "moe_relu", "transcoder", "tool", "weight_sparse")
SKILLS = ("addition", "copy", "dyck", "facts", "ioi", "modadd", "reverse", "sort")
DOMAINS = ("email", "json")


def _all_keys() -> list[str]:
    """Every concrete key of the registry, per-skill / per-domain entries expanded."""
    out = []
    for m in METRICS.values():
        names = {"skill": SKILLS, "domain": DOMAINS}.get(m.placeholder or "", [None])
        for n in names:
            key = m.key.format(**{m.placeholder: n}) if n else m.key
            out += [key, *(f"baselines.{b}.{key}" for b in m.baselines)]
    return [k for k in dict.fromkeys(out) if not k.startswith("domains.")]


def _runs(seeds: tuple[int, ...]) -> list[RunResult]:
    runs = []
    for i, arch in enumerate(ARCHS):
        for seed in seeds:
            values = {k: 0.1 + 0.01 * i + 0.001 * seed + 0.0001 * n for n, k in enumerate(_all_keys())}  # fmt: skip
            values["train.tokens"], values["train.steps"] = 1000, 10
            runs.append(
                RunResult(
                    arch, seed, f"runs/{arch}-seed{seed}",
                    capability={k: v for k, v in values.items() if not k.startswith(("interp.", "baselines.", "tools."))},
                    interp={k: v for k, v in values.items() if k.startswith(("interp.", "baselines."))},
                    tools={k: v for k, v in values.items() if k.startswith("tools.")},
                )
            )  # fmt: skip
    return runs


def _report(tmp_path: Path, seeds: tuple[int, ...]) -> Report:
    posthoc = [
        PostHocResult("dense", s, 10, {"interp.coverage": 0.4, "interp.l0": 16.0, "interp.fvu": 0.1})
        for s in seeds
    ]  # fmt: skip
    return Report(out_dir=tmp_path, seeds=seeds, config={}, runs=tuple(_runs(seeds)),
                  posthoc=tuple(posthoc))  # fmt: skip


def _markdown_tables(text: str) -> list[list[str]]:
    """Each markdown table of `text` as its lines."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _n_columns(table: list[str]) -> int:
    return table[0].count("|") - 1


def test_headline_then_tables_of_readable_width(tmp_path):
    report = _report(tmp_path, (0, 1))
    text = report.write().read_text()
    tables = _markdown_tables(text)
    headline = tables[0]
    assert _n_columns(headline) <= HEADLINE_MAX_COLUMNS
    assert headline[0].startswith("| architecture | answer accuracy | gap |")
    assert [row.split("|")[1].strip() for row in headline[2:]] == list(ARCHS)
    assert max(_n_columns(t) for t in tables) <= 10, max(tables, key=_n_columns)[0]
    # one table per topic, each said by its heading
    for topic in ("Capability", "Coverage", "Specialisation", "Circuits", "Tool calling",
                  "post-hoc route"):  # fmt: skip
        assert re.search(rf"^## .*{topic}", text, flags=re.M), topic
    assert "± " in text  # two seeds: the spread is printed


def test_the_registry_headline_fits(tmp_path):
    """However the score entries change, the registry's headline entries fit in
    HEADLINE_MAX_COLUMNS columns (a gap column each where the entry has one)."""
    keys = _all_keys()
    ms = [m for m in expand([m for m in METRICS.values() if m.headline], keys) if m.headline]
    assert 1 + sum(2 if m.gap else 1 for m in ms) <= HEADLINE_MAX_COLUMNS
    assert any(m.section == "capability" for m in ms) and any(
        m.key.startswith("interp.") for m in ms
    )


def test_one_seed_prints_no_spread_and_json_keeps_every_column(tmp_path):
    report = _report(tmp_path, (0,))
    text = report.write().read_text()
    assert "±" not in text
    assert "One seed (0): no spread over seeds is measured" in text
    arch = json.loads((tmp_path / "report.json").read_text())["architectures"]
    # every registry key that a run holds is a number in report.json
    flat = {}
    for group in arch["moe"].values():
        flat.update(group if isinstance(group, dict) else {})
    flat.update({k: v for k, v in arch["moe"].items() if not isinstance(v, dict)})
    for key in ("interp.coverage_lift", "baselines.init.interp.coverage_lift",
                "interp.skill_circuit_size.copy", "skills.copy.accuracy", "tools.exact_match"):  # fmt: skip
        assert flat[key]["mean"] == pytest.approx(
            next(r for r in report.runs if r.arch == "moe").values()[key]
        ), key


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)  # fmt: skip


# Records, in the DOM the browser dumps, what it drew: each image's decoded size and
# each table's rendered box (a file:// page cannot be inspected from outside otherwise).
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.complete]),
    tables: [...document.querySelectorAll("table")].map(t => [t.rows.length, t.offsetWidth, t.offsetHeight]),
  });
  document.body.appendChild(out);
});
</script>"""


def test_report_html_renders_in_a_headless_browser(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    report = _report(tmp_path, (0, 1))
    report.write()
    page = (tmp_path / "report.html").read_text()
    assert 'src="http' not in page and 'href="http' not in page  # opens offline
    assert page.count("data:image/png;base64,") >= 1
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S).group(1))
    assert probe["images"] and all(w > 100 and h > 100 and done for w, h, done in probe["images"])
    assert len(probe["tables"]) == len(report.tables())
    assert all(rows > 1 and w > 0 and h > 0 for rows, w, h in probe["tables"])
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}", probed.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = imread(shot)[..., :3]
    drawn = (pixels < 0.9).any(-1).mean()  # share of the page that is not white
    assert drawn > 0.03, drawn


def test_publish_replaces_its_own_files_and_keeps_other_results_documents(tmp_path):
    """docs/results holds other results documents (circuit_tracer_side_by_side.md,
    matched_loss/): publishing the report rewrites its files and its plots only."""
    dest = tmp_path / "results"
    (dest / "plots" / "gone-seed9").mkdir(parents=True)
    (dest / "plots" / "gone-seed9" / "old.png").write_bytes(b"x")
    (dest / "other.md").write_text("kept")
    (dest / "report.md").write_text("stale")
    path = _report(tmp_path / "out", (0,)).publish(dest)
    assert path == dest / "report.md" and path.read_text() != "stale"
    assert (dest / "other.md").read_text() == "kept"
    assert not (dest / "plots" / "gone-seed9").exists()  # a run no longer reported


def test_publish_copies_a_trained_runs_model_card_and_links_it_there(tmp_path, monkeypatch):
    """A trained run's checkpoint is build output (runs/ of the compare's folder, not
    committed): its model card is copied beside the published report and linked there,
    so that a fresh clone's links resolve; a card no longer reported is removed."""
    monkeypatch.chdir(tmp_path)
    report = _report(Path("out"), (0,))
    for r in report.runs:
        (Path(r.run_dir) / "checkpoint").mkdir(parents=True)
        (Path(r.run_dir) / "checkpoint" / "README.md").write_text(f"# {r.arch} card")
    dest = Path("published")
    (dest / "models" / "gone-seed9" / "checkpoint").mkdir(parents=True)
    text = report.publish(dest).read_text()
    shutil.rmtree("runs")  # the build output is gone: the published links still resolve
    links = re.findall(r"\[model card\]\(([^)]+)\)", text)
    assert links and len(links) == len({r.arch for r in report.runs})
    for r in report.runs:
        card = dest / "models" / f"{r.arch}-seed{r.seed}" / "checkpoint" / "README.md"
        assert card.read_text() == f"# {r.arch} card"
        assert f"[model card](models/{r.arch}-seed{r.seed}/checkpoint/README.md)" in text
    assert not (dest / "models" / "gone-seed9").exists()


def test_publishing_a_published_report_again_keeps_its_plots_and_model_cards(tmp_path, monkeypatch):
    """A published report merged with new runs (glassbox merge) is published again from
    its own folder: its plots and cards are read from the folders being replaced."""
    monkeypatch.chdir(tmp_path)
    report = _report(Path("out"), (0,))
    runs = []
    for r in report.runs:
        (Path(r.run_dir) / "checkpoint").mkdir(parents=True)
        (Path(r.run_dir) / "checkpoint" / "README.md").write_text(f"# {r.arch} card")
        plot = Path(r.run_dir) / "expert_domain.png"
        plot.write_bytes(r.arch.encode())
        runs.append(replace(r, plots=(plot.as_posix(),)))
    dest = Path("published")
    replace(report, runs=tuple(runs), config={"seeds": [0]}).publish(dest)
    shutil.rmtree("runs")
    first = (dest / "report.md").read_text()
    Report.read(dest / "report.json").publish(dest)
    assert (dest / "report.md").read_text() == first  # links and cards where they were
    for r in report.runs:
        assert (
            dest / "plots" / f"{r.arch}-seed0" / "expert_domain.png"
        ).read_bytes() == r.arch.encode()
        assert (dest / "models" / f"{r.arch}-seed0" / "checkpoint" / "README.md").is_file()
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []  # nothing staged left


def test_per_domain_tables_keep_the_domains_some_model_was_scored_on(tmp_path):
    # on code every package is a domain and the test blocks hold a few: a domain no
    # model has a value for gets no column (json here), one that any model has does
    runs = []
    for i, arch in enumerate(("dense", "moe")):
        loss = {"domains.email.loss": 3.0 + i, "domains.json.loss": None,
                "domains.csv.loss": 2.0 if arch == "moe" else None,
                "domains.numpy.polynomial.loss": 4.0}  # fmt: skip
        runs.append(RunResult(arch, 0, f"runs/{arch}-seed0", capability=loss, interp={}))
    text = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=tuple(runs)).write().read_text()
    table = next(t for t in _markdown_tables(text) if t[0].startswith("| architecture | csv"))
    # a package's name keeps its dots: numpy.polynomial is one domain, not dropped
    assert table[0].split("|")[2:-1] == [" csv ", " email ", " numpy.polynomial "]
    assert table[2].split("|")[-2] == " 4.000 "
    assert "json" not in text
