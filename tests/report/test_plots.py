"""Plots: which figures a run yields, and several runs drawn on the same axes."""

from koda.report.plots import build_plots, load_plot
from koda.report.runs import load_run, load_runs
from tests.report.synthetic import write_run

FULL_RUN = ["loss", "lr", "throughput", "grad_norm", "expert_load", "expert_share", "memory",
            "group_perf", "group_train", "group_val"]


def _lines(ax) -> dict[str, tuple]:
    """Labelled lines of an axes (matplotlib names unlabelled ones "_child<N>")."""
    return {line.get_label(): tuple(line.get_xdata()) for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def test_a_full_run_yields_every_plot_in_order(tmp_path):
    plots = build_plots([load_run(write_run(tmp_path / "a"))])
    assert [p.name for p in plots] == FULL_RUN
    loss = plots[0].figure.axes[0]
    assert set(_lines(loss)) == {"train", "val"}          # one run: the legend names the curves
    assert _lines(loss)["val"] == (10, 20, 30, 40)


def test_reward_components_get_their_own_figure_first_among_groups(tmp_path):
    plots = build_plots([load_run(write_run(tmp_path / "a", rl=True))])
    names = [p.name for p in plots]
    assert names.index("group_rl") == FULL_RUN.index("group_perf")
    rl = plots[names.index("group_rl")]
    assert rl.title == "Reward components (rl/)"
    assert [ax.get_title() for ax in rl.figure.axes] == ["rl/kl", "rl/reward_complexity", "rl/reward_pass"]


def test_two_runs_share_axes_one_line_per_run(tmp_path):
    runs = load_runs([write_run(tmp_path / "a", steps=20), write_run(tmp_path / "b", steps=40, offset=0.5)])
    plots = {p.name: p for p in build_plots(runs)}
    loss = plots["loss"].figure.axes
    assert len(loss) == 1
    lines = _lines(loss[0])
    assert set(lines) == {"a train", "b train", "a val", "b val"}
    assert lines["a train"][-1] == 20 and lines["b train"][-1] == 40
    assert {line.get_color() for line in loss[0].get_lines()} == {"#1f77b4", "#d62728"}
    assert loss[0].get_legend() is not None
    for ax in plots["throughput"].figure.axes:            # every panel compares the two runs
        assert set(_lines(ax)) == {"a", "b"}
    share = plots["expert_share"].figure.axes
    assert [ax.get_title() for ax in share[:2]] == ["a: token share per expert, step 20",
                                                     "b: token share per expert, step 40"]


def test_runs_with_different_metric_sets(tmp_path):
    a = write_run(tmp_path / "a", layers=2)
    b = write_run(tmp_path / "b", layers=4, rl=True)
    text = (a / "metrics.jsonl").read_text().replace('"perf/mfu"', '"perf/other"')
    (a / "metrics.jsonl").write_text(text)
    plots = {p.name: p for p in build_plots(load_runs([a, b]))}
    assert [ax.get_title() for ax in plots["expert_load"].figure.axes] == [f"layer {i}" for i in range(4)]
    assert set(_lines(plots["expert_load"].figure.axes[3])) == {"b"}
    assert set(_lines(plots["throughput"].figure.axes[1])) == {"b"}      # MFU: only b has it
    assert set(_lines(plots["group_rl"].figure.axes[0])) == {"b"}


def test_ratios_and_gradient_norm_use_a_log_scale(tmp_path):
    runs = [load_run(write_run(tmp_path / "a"))]
    plots = {p.name: p for p in build_plots(runs)}
    assert plots["grad_norm"].figure.axes[0].get_yscale() == "log"
    assert all(ax.get_yscale() == "log" for ax in load_plot(runs).figure.axes)
    assert plots["lr"].figure.axes[0].get_yscale() == "linear"


def test_a_sparse_run_yields_only_what_it_has(tmp_path):
    path = tmp_path / "tiny"
    path.mkdir()
    (path / "metrics.jsonl").write_text('{"step": 1, "val/loss": 3.0}\n{"step": 2, "gan/d_loss": 0.7}\n')
    assert [p.name for p in build_plots([load_run(path)])] == ["loss", "group_gan"]
