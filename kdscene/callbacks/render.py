"""Drawing a :class:`~kdscene.callbacks.panel.Panel`: a labelled matplotlib figure, or a plain grid.

matplotlib is not a core dependency. When it is installed, :func:`render_figure` draws every cell with
its title, a heading and two colour bars (attention, DCT spectrum) on a canvas of fixed size
(:func:`figure_size`, Agg backend: no display, no pyplot state) and returns its pixels. Otherwise
:func:`render_grid` lays the cells out in a plain grid, and the panel's legend (written beside the
picture) says what each row and column shows.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.utils import make_grid

from kdscene.callbacks.panel import INFERNO, VIRIDIS, Panel, colourise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CELL_INCHES = 1.4  # one cell with its three-line title
HEADING_INCHES = 0.4  # the heading above the grid
COLORBAR_INCHES = 1.4  # the two colour bars right of the grid
DPI = 80
GRID_PADDING = 2  # pixels between the cells of the plain grid (white)


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (``pip install matplotlib``; the ``notebook`` extra has it)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken install, or a None entry in sys.modules
        return False


def figure_size(rows: int, columns: int) -> tuple[float, float]:
    """The figure's (width, height) in inches; times :data:`DPI` it is the picture's size in pixels."""
    return columns * CELL_INCHES + COLORBAR_INCHES, rows * CELL_INCHES + HEADING_INCHES


def _colour_map(anchors: tuple[tuple[float, float, float], ...], name: str):
    from matplotlib.colors import ListedColormap

    table = colourise(torch.linspace(0, 1, 256)[None], anchors)[:, 0].T
    return ListedColormap(table.numpy(), name=name)


def _colour_bars(fig: Figure, axes) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bars = ((VIRIDIS, "attention (min-max per map)"), (INFERNO, "DCT spectrum (loss normalisation)"))
    for anchors, label in bars:
        mappable = ScalarMappable(Normalize(0, 1), _colour_map(anchors, label))
        bar = fig.colorbar(mappable, ax=axes, fraction=0.02, pad=0.01, aspect=30)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)


def panel_figure(panel: Panel, heading: str) -> Figure:
    """A matplotlib figure of ``panel``: one titled axis per cell, ``heading`` on top, colour bars.

    Args:
        panel: what to draw.
        heading: one line above the grid (tag, epoch).

    Returns:
        The figure, of size :func:`figure_size` (constrained layout keeps it).
    """
    from matplotlib.figure import Figure

    rows, columns = panel.cells.shape[:2]
    fig = Figure(figsize=figure_size(rows, columns), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for r in range(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.imshow(panel.cells[r, c].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(panel.title(r, c), fontsize=6, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
    _colour_bars(fig, axes)
    fig.suptitle(heading, fontsize=8)
    return fig


def figure_pixels(fig: Figure) -> Tensor:
    """The figure drawn by the Agg backend, as RGB (3, H, W) float32 in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = torch.frombuffer(bytearray(canvas.buffer_rgba()), dtype=torch.uint8)
    height, width = canvas.get_width_height()[::-1]
    return rgba.view(height, width, 4)[..., :3].permute(2, 0, 1).float() / 255


def render_figure(panel: Panel, heading: str) -> Tensor:
    """``panel`` drawn by matplotlib (titles, colour bars) as an RGB picture (3, H, W) in [0, 1]."""
    return figure_pixels(panel_figure(panel, heading))


def render_grid(panel: Panel) -> Tensor:
    """``panel``'s cells in a plain grid (no text): RGB (3, H, W) in [0, 1], white padding.

    With R rows, C columns and cells of h x w pixels the grid is
    (R·(h + p) + p) x (C·(w + p) + p) pixels, p = :data:`GRID_PADDING`.
    """
    columns = panel.cells.shape[1]
    return make_grid(panel.cells.flatten(0, 1), nrow=columns, padding=GRID_PADDING, pad_value=1.0)
