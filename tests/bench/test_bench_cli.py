"""The bench CLI and report formatting, on canned data (no benchmark runs)."""

import io
import json

import pytest

from turbomem.bench import cli, core, report


def canned_core_results():
    out = []
    for rep in range(5):
        for impl, drv, rate in (("turbomem", "checked", 300e6), ("turbomem", "unchecked", 450e6),
                                ("dpdk", "ring_mp_mc", 150e6),
                                ("dpdk", "stack", 100e6), ("dpdk", "lf_stack", 50e6)):
            for cache, bulk, threads in ((256, 1, 1), (256, 32, 1), (0, 1, 1), (0, 1, 2), (256, 1, 2),
                                         (256, 32, 2)):
                r = rate * (1 + rep / 100.0)
                out.append({"type": "result", "impl": impl, "driver": drv, "cache": cache, "bulk": bulk,
                            "n_keep": 128, "threads": threads, "rep": rep, "objects": int(r),
                            "seconds": 1.0, "rate_persec": r, "ns_per_obj": 1e9 / r})
    return out


def canned_suite(name="core"):
    rows = core.build_rows(canned_core_results())
    return {"suite": name, "skipped": None, "notes": ["canned"], "columns": core.COLUMNS, "rows": rows,
            "goals": core.evaluate_goals(rows, True), "chart": core.chart(rows, True)}


@pytest.fixture
def fake_runners(monkeypatch):
    calls = []

    def make(name):
        def run(quick, progress, opts):
            calls.append((name, quick))
            progress.update(1, 2, name)
            progress.update(2, 2, name)
            progress.done()
            return canned_suite(name)
        return run

    monkeypatch.setattr(cli, "RUNNERS", {n: make(n) for n in cli.SUITE_NAMES})
    return calls


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv,suite,quick", [
    ([], "all", False),
    (["bench"], "all", False),
    (["core", "--quick"], "core", True),
    (["bench", "python"], "python", False),
    (["hugepages", "--json", "x.json", "--plot", "x.png"], "hugepages", False),
])
def test_parse_args(argv, suite, quick):
    o = cli.parse_args(argv)
    assert o.suite == suite and o.quick == quick


def test_bad_suite_is_usage_error(capsys):
    assert cli.main(["nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def test_all_runs_every_suite_and_prints_table(fake_runners, tmp_path):
    js = tmp_path / "r.json"
    rc, out, err = run_cli(["bench", "all", "--quick", "--json", str(js), "--no-progress"])
    assert rc == 0
    assert fake_runners == [("core", True), ("python", True), ("hugepages", True), ("pipeline", True), ("multiprocess", True)]
    assert "== core ==" in out and "== python ==" in out and "== hugepages ==" in out
    assert "== pipeline ==" in out
    assert "checked ns/obj" in out and "unchecked/ring" in out
    assert "2.00x" in out  # 300 / 150
    assert "cpu:" in out and "load:" in out
    data = json.loads(js.read_text())
    assert data["command"] == "python -m turbomem bench all --quick --json %s --no-progress" % js
    assert [s["suite"] for s in data["suites"]] == ["core", "python", "hugepages", "pipeline", "multiprocess"]
    assert data["machine"]["load_before"] is not None and "load_after" in data["machine"]
    assert "written to" in err


def test_json_to_stdout(fake_runners):
    rc, out, err = run_cli(["core", "--json", "-", "--no-progress"])
    assert rc == 0
    data = json.loads(out)
    assert data["suites"][0]["rows"][0]["tm_mops"] > 0
    assert "== core ==" in err  # the table moves to stderr


def test_progress_bar_on_stderr(fake_runners):
    rc, out, err = run_cli(["core"])
    assert "[" in err and "100%" in err and "core" in err
    assert "100%" not in out


def test_skipped_suite_sets_exit_status(monkeypatch):
    monkeypatch.setattr(cli, "RUNNERS", {n: (lambda q, p, o, n=n: {"suite": n, "skipped": "no compiler",
                                                                    "rows": [], "notes": [], "goals": []})
                                         for n in cli.SUITE_NAMES})
    rc, out, err = run_cli(["python", "--no-progress"])
    assert rc == 1 and "skipped: no compiler" in out


def test_crashing_suite_does_not_hide_others(monkeypatch):
    def boom(q, p, o):
        raise RuntimeError("kaput")

    monkeypatch.setattr(cli, "RUNNERS", {"core": boom, "python": lambda q, p, o: canned_suite("python"),
                                         "hugepages": lambda q, p, o: canned_suite("hugepages")})
    rc, out, err = run_cli(["all", "--no-progress"])
    assert rc == 1
    assert "crashed: RuntimeError: kaput" in out and "== hugepages ==" in out


def test_plot_without_matplotlib(fake_runners, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    rc, out, err = run_cli(["core", "--plot", str(tmp_path / "c.png"), "--no-progress"])
    assert rc == 0
    assert "matplotlib is not importable" in err
    assert not (tmp_path / "c.png").exists()


def test_plot_with_matplotlib(fake_runners, tmp_path):
    pytest.importorskip("matplotlib")
    rc, out, err = run_cli(["core", "--plot", str(tmp_path / "c.png"), "--no-progress"])
    assert rc == 0 and (tmp_path / "c.png").stat().st_size > 0


# ---- report / core helpers ------------------------------------------------------

def test_summarize_and_ratio():
    s = report.summarize([3, 1, 2, None, float("nan")])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert report.summarize([])["median"] is None
    assert report.ratio(3, 2) == 1.5 and report.ratio(1, 0) is None and report.ratio(None, 1) is None


def test_render_table_alignment():
    cols = [{"key": "name", "title": "name"}, {"key": "v", "title": "value", "fmt": "x"}]
    t = report.render_table(cols, [{"name": "a", "v": 1.5}, {"name": "long name", "v": None}])
    lines = t.splitlines()
    assert lines[0].startswith("name") and lines[1].startswith("---------")
    assert lines[2] == "a          1.50x"
    assert lines[3] == "long name      -"


def test_fmt_value():
    assert report.fmt_value(123456789.0, "M") == "123.5"
    assert report.fmt_value(2.5e9, "M") == "2500"
    assert report.fmt_value(0.5, "%") == "50%"
    assert report.fmt_value(1234.0, "ns") == "1234"
    assert report.fmt_value(None, "d") == "-"


def test_core_rows_and_goals_from_canned_results():
    rows = core.build_rows(canned_core_results())
    r = next(r for r in rows if (r["cache"], r["bulk"], r["threads"]) == (256, 1, 1))
    assert r["x_ring_mp_mc"] == pytest.approx(2.0)
    assert r["x_stack"] == pytest.approx(3.0)
    assert r["x_lf_stack"] == pytest.approx(6.0)
    assert r["x_ring_mp_mc_paired"]["n"] == 5
    assert r["tm_reps"] == 5 and r["tm_min"] < r["tm_max"]
    assert r["xu_ring_mp_mc"] == pytest.approx(3.0)
    goals = {g["goal"]: g for g in core.evaluate_goals(rows, True)}
    # the canned rows have n_keep 128: the keep == bulk goals are not measured
    assert goals["unchecked, cache 256, keep == bulk 1, 1 thread vs ring_mp_mc"]["met"] is None
    worst = goals["checked, every cache-256 row vs ring_mp_mc (the lowest)"]
    assert worst["met"] is True and worst["measured"] == pytest.approx(2.0)   # 2.0 >= 0.9
    rows_k = core.build_rows([dict(x, n_keep=x["bulk"]) for x in canned_core_results()])
    goals = {g["goal"]: g for g in core.evaluate_goals(rows_k, True)}
    assert goals["unchecked, cache 256, keep == bulk 1, all threads vs ring_mp_mc"]["met"] is True  # 3 >= 1.2
    assert goals["unchecked, cache 256, keep == bulk 32, 1 thread vs ring_mp_mc"]["met"] is True    # 3 >= 1.8
    assert goals["unchecked, no cache, keep == bulk 1, 1 thread vs lf_stack"]["met"] is True       # 9 >= 3
    nod = core.evaluate_goals(rows, False)
    assert all(g["met"] is None and "skipped" in g["detail"] for g in nod)


def test_parse_lines_keeps_garbage_apart():
    lines = ['{"type":"meta","with_dpdk":false}', "EAL: noise", '{"type":"result","impl":"turbomem"}',
             '{"type":"error","error":"x"}', "{broken"]
    p = core.parse_lines(lines)
    assert p["meta"]["with_dpdk"] is False
    assert len(p["results"]) == 1 and len(p["errors"]) == 1
    assert p["garbage"] == ["EAL: noise", "{broken"]


def test_progress_non_tty_prints_deciles():
    s = io.StringIO()
    p = report.Progress(stream=s)
    for i in range(101):
        p.update(i, 100, "x")
    p.done()
    lines = s.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("[" + "#" * 30 + "] 100%")
