"""compare.png: log axes for curves that span decades, dashed unfinished runs, a legend that is never cut."""
import matplotlib.image
import numpy as np
import pytest

from tests.test_compare import fake_run, grid
from trainlab.runs.compare import collect, figure_title, main, parse_args, ranked
from trainlab.runs.figures import PANELS, curves_figure, pyplot

PANEL = {key: i for i, (key, _) in enumerate(PANELS)}


def groups_of(sweep, *args):
    parser, ns = parse_args([str(sweep), *args])
    groups = collect(parser, ns)
    ranked(parser, groups, None, False)
    return groups


def rows(losses, accs):
    return [{"step": s, "train_loss": loss, "lr": 0.1, "val_loss": loss, "val_acc": acc}
            for s, (loss, acc) in enumerate(zip(losses, accs))]


@pytest.fixture
def with_diverged(tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep, 0, ["optimizer=sgd"], acc=0.6, loss=0.9, rows=rows([2.3, 1.4, 0.9], [0.1, 0.4, 0.6]))
    fake_run(sweep, 1, ["optimizer=adamw"], acc=0.9, loss=0.5, rows=rows([2.3, 0.9, 0.5], [0.1, 0.7, 0.9]))
    fake_run(sweep, 2, ["optimizer=lion"], status="diverged", verdict="diverged",
             rows=rows([2.3, 5e4, 1e10], [0.1, 0.1, 0.1]))
    return sweep


def test_a_diverged_run_gets_log_axes_and_a_dashed_line(with_diverged):
    fig = curves_figure(groups_of(with_diverged))
    axes = fig.axes
    for key in ("train_loss", "val_loss"):  # 0.5 ... 1e10: 2e10 times, over 2 decades
        ax = axes[PANEL[key]]
        assert ax.get_yscale() == "log"
        styles = {line.get_label(): line.get_linestyle() for line in ax.lines if not line.get_label().startswith("_")}
        assert styles == {"optimizer=adamw": "-", "optimizer=sgd": "-", "optimizer=lion [diverged]": "--"}
        ends = [line for line in ax.lines if line.get_marker() == "x"]  # where the diverged run stopped
        assert len(ends) == 1 and list(ends[0].get_xdata()) == [2] and list(ends[0].get_ydata()) == [1e10]
        low, high = ax.get_ylim()
        assert low < 0.5 and high > 1e10  # every curve in view
    assert axes[PANEL["val_acc"]].get_yscale() == "linear"  # 0.1 ... 0.9: under a decade
    pyplot().close(fig)
    fig = curves_figure(groups_of(with_diverged, "--filter", "status=completed"))
    assert fig.axes[PANEL["train_loss"]].get_yscale() == "linear"  # 0.5 ... 2.3: 4.6 times
    pyplot().close(fig)


def test_the_legend_is_inside_the_figure_and_below_the_panels(tmp_path):
    sweep = tmp_path / "sweep"
    for num in range(12):  # long labels: three swept keys each
        fake_run(sweep, num, [f"optimizer=opt{num}", f"norm=layernorm{num % 3}", f"regularization.dropout=0.{num}"],
                 acc=0.5 + num / 100, loss=1.0 - num / 100)
    fig = curves_figure(groups_of(sweep))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box, canvas = legend.get_window_extent(renderer), fig.bbox
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= canvas.width and box.y1 <= canvas.height
    assert box.y1 <= min(ax.get_tightbbox(renderer).y0 for ax in fig.axes) + 1  # below every panel
    assert len(legend.get_texts()) == 12
    assert "optimizer=opt11, norm=layernorm2, regularization.dropout=0.11" in [t.get_text() for t in
                                                                                legend.get_texts()]
    pyplot().close(fig)


def test_a_metric_nobody_logged_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep, 0, ["optimizer=sgd"], loss=0.5, objective="val_loss",
             rows=[{"step": s, "train_loss": 1 / (s + 1), "val_loss": 1 / (s + 1)} for s in range(3)])
    fig = curves_figure(groups_of(sweep))
    assert [t.get_text() for t in fig.axes[PANEL["val_acc"]].texts] == ["not logged"]
    assert not fig.axes[PANEL["val_loss"]].texts
    pyplot().close(fig)


def test_figure_is_a_readable_png(tmp_path, capsys):
    sweep = grid(tmp_path / "sweep")
    assert main([str(sweep), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    png = sweep / "compare.png"
    assert f"figure: {png}" in captured.err and "figure" not in captured.out  # stdout stays pure csv
    assert png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (750, 1100)  # 11 x 7.5 inches at 100 dpi
    assert image[..., :3].std() > 0.05  # curves drawn, not a blank canvas
    assert np.all(image[-1, :, :3] == 1.0)  # the bottom row is background: nothing cut at the edge


def test_validation_panels_zoom_to_the_differences_the_table_ranks_and_the_figure_has_a_title(tmp_path):
    sweep = tmp_path / "multirun" / "2026-12-07" / "01-40-00"
    digits = {"trainer": {"seed": 0}, "optimizer": {"name": "x"}, "data": {"name": "digits"}}
    for num, (acc, loss) in enumerate([(0.967, 0.12), (0.986, 0.06)]):  # both start at chance (0.1, loss 2.3)
        fake_run(sweep, num, [f"optimizer={('sgd', 'adamw')[num]}"], acc=acc, loss=loss, config=digits,
                 rows=rows([2.3, 0.2, loss + 0.02, loss], [0.1, acc - 0.02, acc - 0.01, acc]))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    groups = groups_of(sweep)
    title = figure_title(groups, sweep)
    assert title == "digits, sweep .../multirun/2026-12-07/01-40-00 (2 runs)"
    fig = curves_figure(groups, title)
    assert fig.get_suptitle() == title
    low, high = fig.axes[PANEL["val_acc"]].get_ylim()
    assert 0.9 < low < 0.945 and 0.986 < high < 1.0  # 0.967 vs 0.986 fills the panel; chance (0.1) is off it
    low, high = fig.axes[PANEL["val_loss"]].get_ylim()
    assert 0 < low < 0.06 and 0.2 < high < 0.5
    assert fig.axes[PANEL["val_acc"]].get_title() == "validation accuracy (y zoomed to steps \u2265 1)"
    assert fig.axes[PANEL["train_loss"]].get_ylim()[1] > 2.3  # other panels keep every value in view
    pyplot().close(fig)
