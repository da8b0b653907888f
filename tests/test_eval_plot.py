"""The eval report's plot is readable: a title, each bar's value written on it, and a legend clear of the data."""

from __future__ import annotations

from mixdistill.evaluate.report import Cell, Table, plot_figure, plot_png


def test_plot_has_title_values_and_a_legend_outside_the_axes():
    import matplotlib.pyplot as plt

    rows = [(f"model-{m}", mode, [0.81 + 0.01 * i, None if mode == "MD" and m == 1 else 0.5])
            for m in range(3) for i, mode in enumerate(("CoT", "PoT", "MD"))]
    cells = [[None if v is None else Cell(v, n) for v, n in zip(values, (200, 1319))] for _, _, values in rows]
    table = Table(["svamp/test", "gsm8k/test"], rows, cells)
    fig = plot_figure(table)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_title() == "Accuracy per model and mode on each task split"
    labels = [t.get_text() for t in ax.texts]
    assert "81.0" in labels and "83.0" in labels and labels.count("50.0") == 8  # one per bar drawn
    legend = fig.legends[0]
    assert len(legend.get_texts()) == 9
    renderer = fig.canvas.get_renderer()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not box.overlaps(area)  # the legend covers no bar
    assert fig.get_window_extent(renderer).contains(box.x0, box.y0) and box.y1 <= area.y0
    plt.close(fig)
    assert plot_png(table)[:4] == b"\x89PNG"
