"""``xdt report``'s files as published in docs/results: a single run shows no spread, report.md is GitHub-flavoured
Markdown whose tables keep their shape and whose figures are linked and exist, it opens with where it came from,
and the figures are labelled and coloured the same way throughout. Runs are written by hand (config.yaml,
metrics.jsonl, metrics.json, done, Hydra's overrides): no training."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from xdt import plots
from xdt.report import main, md, write_report

DOMAINS = ("books", "dvd", "kitchen")


def synthetic(domain: str) -> dict:
    return {"kind": "synthetic", "domain": domain, "train_size": 2000, "validation_size": 200, "test_size": 500,
            "unlabeled_size": 2000, "seed": 0, "label_map": None}


def write_run(folder: Path, strategy: str, seed: int, source: str, targets: list[str], level: float,
              note: str | None = None, steps: int = 5) -> Path:
    """A finished run as ``xdt train`` leaves it, with ``steps`` evaluations whose scores rise towards ``level``
    (target) and ``level + 0.1`` (source), so the learning curves have a shape."""
    config = {"strategy": {"_target_": f"xdt.strategies.{strategy}.X"}, "model": {"name": "tiny", "peft": "none"},
              "seed": seed, "max_steps": 20 * steps, "hardware": {"device": "cpu", "mixed_precision": "no"},
              "source_domain": {f"syn_{source}": synthetic(source)},
              "target_domain": {"shots": 0, **{f"syn_{t}": synthetic(t) for t in targets}}}
    if note is not None:
        config["note"] = note
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    records = []
    for i in range(1, steps + 1):
        rise = 0.5 + (level - 0.5) * i / steps + 0.01 * ((seed + i) % 3)
        scores = {f"source/syn_{source}/{split}": {"accuracy": min(rise + 0.1, 1.0)}
                  for split in ("validation", "test")}
        scores.update({f"target/syn_{t}/{split}": {"accuracy": rise - 0.02 * k} for k, t in enumerate(targets)
                       for split in ("validation", "test")})
        records.append({"strategy": strategy, "step": 20 * i, "seed": seed, "eval": scores})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = {"strategy": strategy, "selection": {"criterion": "source_val", "metric": "accuracy"},
              "selected_step": records[-1]["step"], "steps": records[-1]["step"], "wall_time_s": 10.0 + seed,
              "train_time_s": 8.0, "metrics": records[-1]["eval"]}
    (folder / "metrics.json").write_text(json.dumps(result))
    (folder / "done").write_text("finished\n")
    return folder


@pytest.fixture
def grid(tmp_path) -> Path:
    """A sweep: erm, dann, coral on books -> kitchen+dvd with 3 seeds, mmd with 2, and dvd -> kitchen+books with one
    seed of each (cells of n = 1); one row whose label holds Markdown's markup characters; Hydra's multirun.yaml."""
    folder = tmp_path / "grid"
    levels = {"erm": 0.70, "dann": 0.74, "coral": 0.72, "mmd": 0.71}
    job = 0
    for strategy, level in levels.items():
        for seed in range(3 if strategy != "mmd" else 2):
            write_run(folder / f"{job}_strategy={strategy},seed={seed}", strategy, seed, "books", ["kitchen", "dvd"],
                      level + 0.01 * seed)
            job += 1
        write_run(folder / f"{job}_strategy={strategy},source=dvd", strategy, 0, "dvd", ["kitchen", "books"],
                  level - 0.03)
        job += 1
    write_run(folder / "odd", "erm", 0, "books", ["kitchen"], 0.69, note="a|b *c* $x$ <y> _z_ \\|")
    (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "strategy=erm,dann,coral,mmd", "seed=0,1,2", "source_domain=syn_books"]}}}))
    return folder


def tables(text: str) -> list[list[str]]:
    """The GFM tables of ``text``: blocks of lines that start with ``|``."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def cells(line: str) -> list[str]:
    """A table row's cells, split where GFM splits them: at a ``|`` that no backslash escapes."""
    assert line.startswith("|") and line.endswith("|"), line
    return re.split(r"(?<!\\)\|", line[1:-1])


def pair_line(path: Path, strategy: str, pair: str) -> dict:
    with open(path, newline="", encoding="utf-8") as file:
        return next(row for row in csv.DictReader(file) if row["strategy"] == strategy and row["pair"] == pair)


# ---- 1. a single run has no spread ----------------------------------------------------------------------------

def test_a_single_run_shows_its_score_alone(grid, capsys):
    report = write_report(grid)
    text = (grid / "report" / "report.md").read_text()
    single, several = report.cells[("dann", "syn_dvd→syn_kitchen")], report.cells[("dann", "syn_books→syn_kitchen")]
    assert len(single.target) == 1 and len(several.target) == 3
    dann = next(line for line in text.splitlines() if line.startswith("| dann |"))
    books_kitchen, dvd_kitchen = cells(dann)[2], cells(dann)[4]  # pairs sorted: books->dvd, books->kitchen, ...
    assert f"{several.mean:.3f} ± {several.std:.3f} (3)" in books_kitchen
    assert dvd_kitchen.strip() == f"{single.mean:.3f} (1)"
    assert "± 0.000" not in text and "±0.000" not in text
    assert "± 0.000" not in capsys.readouterr().out  # the printed table too
    csv_file = grid / "report" / "report.csv"
    assert pair_line(csv_file, "dann", "syn_dvd→syn_kitchen")["target_std"] == ""  # unknown, not 0
    assert float(pair_line(csv_file, "dann", "syn_books→syn_kitchen")["target_std"]) == pytest.approx(several.std)


def test_seed_by_seed_intervals_need_three_seeds(grid):
    write_report(grid)
    text = (grid / "report" / "report.md").read_text()
    section = text.split("Seed by seed against ERM", 1)[1].split("\n## ", 1)[0]
    rows = {cells(line)[0].strip(): [c.strip() for c in cells(line)[1:]] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| strategy") and not line.startswith("| :")}
    # columns: books->dvd, books->kitchen, dvd->books, dvd->kitchen, average
    assert "95% CI" in rows["dann"][1] and "3/3 above" in rows["dann"][1]  # 3 seeds: an interval
    assert "CI" not in rows["mmd"][1] and "too few seeds for an interval; 2/2 above" in rows["mmd"][1]  # 2 seeds
    assert "CI" not in rows["dann"][3] and "1/1 above" in rows["dann"][3]  # 1 seed



def test_one_contended_run_does_not_move_a_rows_cost(grid):
    """Costs are medians over a row's runs: a run slowed 100 times by another job on the machine leaves the row's
    seconds per step, its ratio to ERM's and the CSV's figure where the other seeds put them."""
    slow = next(grid.glob("*_strategy=dann,seed=2")) / "metrics.json"
    slow.write_text(json.dumps({**json.loads(slow.read_text()), "train_time_s": 800.0}))
    report = write_report(grid)
    assert report.step_ratio("dann") == pytest.approx(1.0)
    line = pair_line(grid / "report" / "report.csv", "dann", "syn_books→syn_kitchen")
    assert float(line["s_per_step_median"]) == pytest.approx(8.0 / 100)
    dann = next(line for line in (grid / "report" / "report.md").read_text().splitlines()
                if line.startswith("| dann |") and line.rstrip().endswith("x |"))
    assert cells(dann)[-1].strip() == "1.00x"


def test_with_several_pairs_seconds_per_step_are_given_per_pair_against_erms_on_that_pair(grid):
    """A strategy's cost follows the pair's lengths: each pair gets its own s/step column, with the ratio to ERM's on
    that pair, and the last column averages the pairs' ratios."""
    slow = next(grid.glob("*_strategy=dann,source=dvd")) / "metrics.json"
    slow.write_text(json.dumps({**json.loads(slow.read_text()), "train_time_s": 16.0}))
    write_report(grid)
    lines = [line for line in (grid / "report" / "report.md").read_text().splitlines() if "wall s" in line
             or line.startswith(("| erm note=null |", "| dann |")) and line.rstrip().endswith("x |")]
    header, erm, dann = ([c.strip() for c in cells(line)] for line in lines[:3])
    columns = dict(zip(header, zip(erm, dann)))
    assert columns["syn_books→syn_kitchen s/step"] == ("0.08", "0.08 (1.00x)")
    assert columns["syn_dvd→syn_books s/step"] == ("0.08", "0.16 (2.00x)")
    assert columns["s/step vs ERM"] == ("1.00x", "1.50x") and "median s/step" not in columns

# ---- 2. report.md is GitHub-flavoured Markdown ----------------------------------------------------------------

def test_every_table_keeps_its_shape(grid):
    write_report(grid, diagnose=False)
    text = (grid / "report" / "report.md").read_text()
    found = tables(text)
    assert len(found) >= 3  # results, cost, seed by seed
    lines = text.splitlines()
    for table in found:
        width = len(cells(table[0]))
        assert re.fullmatch(r"\|( :?-{3,}:? \|)+", table[1]), table[1]  # the alignment row
        assert all(len(cells(line)) == width for line in table), table
        before = lines[lines.index(table[0]) - 1]
        assert before == "", f"a table must follow a blank line, not {before!r}"
    odd = next(line for table in found for line in table if "note=" in line)
    label = cells(odd)[0].strip()
    assert label == md("erm note=a|b *c* $x$ <y> _z_ \\|")
    assert label == r"erm note=a\|b \*c\* \$x\$ \<y> \_z\_ \\\|"


def test_markup_in_data_is_escaped_but_words_are_left_alone():
    assert md("erm task.train_on=both") == "erm task.train_on=both"  # an underscore inside a word is not markup
    assert md("a\nb|c") == r"a b\|c"
    assert md("[/bold] `x` ~y~ &amp;") == r"\[/bold\] \`x\` \~y\~ \&amp;"


def test_figures_are_linked_and_exist(grid):
    write_report(grid)
    out = grid / "report"
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]\n]*\]\(([^)\s]+)\)", text)
    pngs = sorted(path.name for path in out.glob("*.png"))
    assert sorted(links) == pngs and len(pngs) == 4 + 5  # a learning-curves figure per pair, a matrix per row
    assert all("/" not in link for link in links)  # next to report.md: the links work wherever the folder goes
    for link in links:
        caption = text.split(f"]({link})")[0].rsplit("\n\n", 1)[-1]
        assert caption.startswith("!["), "the image is a paragraph of its own"
    assert "syn\\_books" not in text  # only real markup is escaped
    assert "**syn_books→syn_kitchen**\n\n![Learning curves, syn_books→syn_kitchen](" in text
    assert "### Learning curves\n" in text and "### Transfer matrices\n" in text and "**dann**\n" in text


# ---- 3. provenance --------------------------------------------------------------------------------------------

def test_figures_of_an_earlier_report_that_this_one_did_not_draw_are_removed(grid):
    out = grid / "report"
    out.mkdir()
    (out / "transfer_matrix_a-row-that-is-gone.png").write_bytes(b"old")
    (out / "notes.png").write_bytes(b"the user's own")
    write_report(grid)
    assert not (out / "transfer_matrix_a-row-that-is-gone.png").exists()
    assert (out / "notes.png").read_bytes() == b"the user's own"
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", (out / "report.md").read_text()))
    assert {p.name for p in out.glob("*.png")} == linked | {"notes.png"}


def test_report_md_opens_with_its_provenance(grid):
    main([str(grid), "--selection", "last"])
    text = (grid / "report" / "report.md").read_text()
    head = text.split("\n## ", 1)[0].split("| strategy", 1)[0]
    assert head.startswith(f"# xdt report: {grid}\n")
    assert f"- **Command:** `{shlex.join(['xdt', 'report', str(grid), '--selection', 'last'])}`" in head
    assert re.search(r"- \*\*Date:\*\* \d{4}-\d\d-\d\d \d\d:\d\d UTC", head)
    machine = next(line for line in head.splitlines() if line.startswith("- **Machine**"))
    assert "logical cores" in machine and ("GPU" in machine or "MPS" in machine)
    xdt_line = next(line for line in head.splitlines() if line.startswith("- **xdt:**"))
    assert re.fullmatch(r"- \*\*xdt:\*\* version [0-9.]+\S*, commit ([0-9a-f]{40}( \+ uncommitted changes in "
                        r"xdt/)?|unknown)", xdt_line), xdt_line
    assert "- **Runs:** 16 averaged in, 0 not averaged in" in head
    assert "device=cpu, mixed_precision=no (16 runs)" in head
    assert "- **Overrides of grid** (its multirun.yaml" in head
    assert "`strategy=erm,dann,coral,mmd seed=0,1,2 source_domain=syn_books`" in head
    assert "record no xdt commit" in head  # nothing is made up for the runs


def test_a_report_made_from_python_names_the_equivalent_command(grid, tmp_path):
    write_report(grid, criterion="last", out_dir=tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"`xdt report {grid} --selection last --out {tmp_path / 'out'}`" in text


def test_saved_overrides_are_data(grid):
    """A multirun.yaml that is a link, or holds an interpolation, is never followed or resolved."""
    (grid / "multirun.yaml").unlink()
    (grid / "multirun.yaml").symlink_to(grid / "0_strategy=erm,seed=0" / "config.yaml")
    hydra = grid / "odd" / ".hydra"
    hydra.mkdir()
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(["note=${oc.env:HOME}"]))
    write_report(grid)
    text = (grid / "report" / "report.md").read_text()
    assert "Overrides of grid" not in text
    assert "- **Overrides of odd** (its .hydra/overrides.yaml" in text and "`'note=${oc.env:HOME}'`" in text


# ---- 4. figures ------------------------------------------------------------------------------------------------

def test_each_row_keeps_its_colour_in_every_figure(grid, monkeypatch):
    """One colour and marker per row, the same in each learning-curves figure, and a title, axis labels and a
    legend outside the axes on every one."""
    import matplotlib.figure

    seen: list[dict] = []
    save = matplotlib.figure.Figure.savefig

    def record(figure, path, **kwargs):
        axes = figure.axes
        seen.append({"name": Path(path).name, "title": figure._suptitle.get_text() if figure._suptitle else "",
                     "labels": [(a.get_xlabel(), a.get_ylabel()) for a in axes],
                     "lines": {line.get_label(): (line.get_color(), line.get_marker(), line.get_linestyle())
                               for a in axes for line in a.get_lines()},
                     "legend": [text.get_text() for legend in figure.legends for text in legend.get_texts()]})
        return save(figure, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    write_report(grid)
    curves = [figure for figure in seen if figure["name"].startswith("learning_curves_")]
    matrices = [figure for figure in seen if figure["name"].startswith("transfer_matrix_")]
    assert len(curves) == 4 and len(matrices) == 5
    style: dict[str, tuple] = {}
    for figure in curves:
        assert figure["title"].startswith("Learning curves, ")
        assert all(x == plots.STEP_LABEL for x, _ in figure["labels"]) and figure["labels"][0][1] == "accuracy (0 to 1)"
        assert figure["legend"] and set(figure["legend"]) == set(figure["lines"])
        for label, colour in figure["lines"].items():
            row = label.rsplit(" (", 1)[0]
            assert style.setdefault(row, colour) == colour, f"{row} changes colour between figures"
    assert len(set(style.values())) == len(style)  # no two rows look alike
    for figure in matrices:
        assert figure["title"].startswith("Transfer matrix, ") and figure["labels"][0][0].startswith("evaluated on")


def test_the_runs_code_is_the_commit_they_recorded_not_the_reports(tmp_path):
    from xdt.report import runs_code
    from xdt.runs import Run

    def run(name: str, result: dict | None) -> Run:
        return Run(tmp_path / name, {}, [], result, None)
    commit = "a" * 40
    assert "record no xdt commit" in runs_code([run("old", {"strategy": "erm"})])
    line = runs_code([run("a", {"xdt": {"commit": commit}}), run("b", {"xdt": {"commit": commit}}), run("old", {})])
    assert f"{commit} (2 runs)" in line and "not recorded (1 run)" in line
