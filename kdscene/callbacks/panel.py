"""The attention-map panel as data: one row per image, labelled columns of RGB cells, and its legend.

For each tapped layer (in tap order) the columns are the teacher's and the student's attention map,
then the teacher's and the student's DCT frequency map of the same attention map; a network with
fewer taps simply has no cell at the layers it lacks. The first column is the input image.

* **Attention**: A = (1/C)·Σ_c F_c² of the tapped map (:func:`kdscene.losses.dct.channel_energy`, the
  map AT and the DCT loss compare), bilinearly upsampled to the image, min-max normalised per map to
  [0, 1] and drawn with the viridis colour map at 65 % opacity over the dimmed greyscale image.
* **DCT spectrum**: :func:`kdscene.losses.dct_frequency_map` of the same map with the run's DCT
  variant: the loss's own transform and normalisation (values in [0, 1]), one pixel per
  coefficient, coefficient (0, 0) top-left, inferno colour map.

Everything here is plain torch, so that the panel needs no plotting library (:mod:`.render` draws it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdscene.features import Features
from kdscene.losses import dct_frequency_map
from kdscene.losses.dct import channel_energy

# nine evenly spaced samples of matplotlib's colour maps (0, 1/8, ..., 1), linearly interpolated
VIRIDIS = (
    (0.267, 0.005, 0.329), (0.279, 0.175, 0.483), (0.230, 0.322, 0.546), (0.173, 0.449, 0.558),
    (0.128, 0.567, 0.551), (0.158, 0.684, 0.502), (0.369, 0.789, 0.383), (0.678, 0.864, 0.190),
    (0.993, 0.906, 0.144),
)  # fmt: skip
INFERNO = (
    (0.001, 0.000, 0.014), (0.129, 0.047, 0.291), (0.342, 0.062, 0.429), (0.541, 0.135, 0.415),
    (0.736, 0.216, 0.330), (0.894, 0.353, 0.194), (0.978, 0.558, 0.035), (0.975, 0.798, 0.206),
    (0.988, 0.998, 0.645),
)  # fmt: skip
OVERLAY_ALPHA = 0.65  # opacity of the attention colours over the image
DIM = 0.5  # brightness of the greyscale image under the attention colours
DISPLAY_EPS = 1e-8  # keeps a constant map (a 1x1 tap) from 0/0 when the run's DCT term has eps=0
NAME_WIDTH = 20  # class names are shortened to this many characters in cell titles


def colourise(values: Tensor, anchors: Sequence[tuple[float, float, float]]) -> Tensor:
    """Map values in [0, 1] of shape (..., H, W) to RGB (..., 3, H, W) by linear interpolation.

    Args:
        values: any shape ending in (H, W); clamped to [0, 1], NaN drawn as 0.
        anchors: RGB colours at evenly spaced positions 0, 1/(n-1), ..., 1.

    Returns:
        float32 RGB in [0, 1].
    """
    table = torch.tensor(anchors, dtype=torch.float32, device=values.device)
    x = torch.nan_to_num(values.float(), nan=0.0).clamp(0, 1) * (len(anchors) - 1)
    lo = x.floor().long().clamp(max=len(anchors) - 2)
    frac = (x - lo).unsqueeze(-1)
    rgb = table[lo] * (1 - frac) + table[lo + 1] * frac
    return rgb.movedim(-1, -3)


def unit_range(x: Tensor) -> Tensor:
    """Per-sample min-max normalisation of (N, ...) to [0, 1] (a constant sample becomes 0)."""
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - lo.view(shape)) / (hi - lo).clamp_min(1e-12).view(shape)


def attention_cells(fmap: Tensor, grey: Tensor) -> Tensor:
    """Attention of (B, C, h, w) maps over greyscale images (B, H, W): RGB (B, 3, H, W)."""
    energy = channel_energy(fmap.float()).unsqueeze(1)
    energy = F.interpolate(energy, size=grey.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    colours = colourise(unit_range(energy), VIRIDIS)
    return OVERLAY_ALPHA * colours + (1 - OVERLAY_ALPHA) * DIM * grey.unsqueeze(1)


def spectrum_cells(fmap: Tensor, size: tuple[int, int], variant: str, eps: float) -> Tensor:
    """DCT frequency maps of (B, C, h, w) maps, one block of pixels per coefficient: (B, 3, H, W)."""
    freq = dct_frequency_map(fmap.float(), variant=variant, eps=eps).unsqueeze(1)
    freq = F.interpolate(freq, size=size, mode="nearest")[:, 0]
    return colourise(freq, INFERNO)


@dataclass(frozen=True)
class Column:
    """What one column of the panel shows.

    Args:
        kind: ``"input"``, ``"attention"`` or ``"DCT spectrum"``.
        network: ``"teacher"`` or ``"student"`` (``""`` for the input).
        layer: the tapped module path (``""`` for the input).
    """

    kind: str
    network: str = ""
    layer: str = ""

    @property
    def label(self) -> str:
        """``"input"`` or ``"<network> <layer> <kind>"``."""
        return self.kind if self.kind == "input" else f"{self.network} {self.layer} {self.kind}"


@dataclass(frozen=True)
class Row:
    """Which image a row shows: its index in the batch, its true and predicted class names."""

    index: int
    true: str | None = None
    student: str | None = None
    teacher: str | None = None

    def describe(self, width: int | None = None) -> list[str]:
        """Lines ``#i``, ``true: ...``, ``student: ... / teacher: ...`` (names cut to ``width``)."""
        cut = (lambda s: s if len(s) <= width else s[: width - 1] + "…") if width else (lambda s: s)
        lines = [f"#{self.index}"]
        if self.true is not None:
            lines.append(f"true: {cut(self.true)}")
        preds = [f"{who}: {cut(name)}" for who, name in (("S", self.student), ("T", self.teacher)) if name]
        return lines + preds


@dataclass(frozen=True)
class Panel:
    """Cells (rows, columns, 3, H, W) in [0, 1], what each column and row shows, and how it was drawn."""

    cells: Tensor
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...]

    def title(self, row: int, column: int) -> str:
        """The title of one cell: which image, network, layer and picture."""
        col, info = self.columns[column], self.rows[row]
        if col.kind == "input":
            return "\n".join(info.describe(NAME_WIDTH))
        return f"#{info.index} {col.network}\n{col.layer}\n{col.kind}"

    def legend(self, heading: str) -> str:
        """A plain-text legend: the grid's rows and columns and how the cells are normalised."""
        lines = [heading, f"{len(self.rows)} rows (one per image) x {len(self.columns)} columns.", "Columns:"]
        lines += [f"  {i + 1}. {c.label}" for i, c in enumerate(self.columns)]
        lines.append("Rows:")
        lines += [f"  {i + 1}. " + ", ".join(r.describe()) for i, r in enumerate(self.rows)]
        return "\n".join([*lines, "Normalisation:", *(f"  {n}" for n in self.notes)]) + "\n"


def notes(variant: str) -> tuple[str, ...]:
    """How the attention and spectrum cells are computed, normalised and coloured."""
    return (
        "attention: channel mean of F² of the tapped map, upsampled to the image, min-max normalised per "
        f"map to [0, 1]; viridis colour map at {OVERLAY_ALPHA:.0%} over the dimmed greyscale image",
        f"DCT spectrum: kdscene.losses.dct_frequency_map(variant={variant!r}) of the same map, the DCT "
        "loss's own normalisation (values in [0, 1]); one block per coefficient, (0, 0) top-left; inferno",
    )


def _class_name(label: Tensor, classes: Sequence[str] | None) -> str:
    index = int(label)
    return classes[index] if classes is not None and 0 <= index < len(classes) else str(index)


def _row(
    i: int, index: int, labels: Tensor | None, preds: dict[str, Tensor], classes: Sequence[str] | None
) -> Row:
    """Row ``i`` of the panel, titled ``#index``."""
    true = _class_name(labels[i], classes) if labels is not None else None
    named = {k: _class_name(v[i], classes) for k, v in preds.items()}
    return Row(index, true, named.get("student"), named.get("teacher"))


def _layer_columns(
    networks: list[tuple[str, Features]], layer: int, grey: Tensor, variant: str, eps: float
) -> list[tuple[Column, Tensor]]:
    """The attention cells, then the spectrum cells, of every network that has tap ``layer``."""
    present = [(name, f.names[layer], f.maps[layer].detach()) for name, f in networks if layer < len(f.maps)]
    size = tuple(grey.shape[-2:])
    attention = [(Column("attention", n, lay), attention_cells(m, grey)) for n, lay, m in present]
    spectra = [
        (Column("DCT spectrum", n, lay), spectrum_cells(m, size, variant, eps)) for n, lay, m in present
    ]
    return attention + spectra


def build_panel(
    images: Tensor,
    student: Features,
    teacher: Features | None,
    labels: Tensor | None = None,
    classes: Sequence[str] | None = None,
    variant: str = "submission",
    eps: float = DISPLAY_EPS,
    indices: Sequence[int] | None = None,
) -> Panel:
    """The panel of a batch: input, then per tapped layer the attention maps and their DCT spectra.

    Args:
        images: the (normalised) input batch (B, 3, H, W); each image is shown min-max scaled.
        student: the student's features of ``images``.
        teacher: the teacher's, or ``None`` (student only).
        labels: true labels (B,), for the row titles.
        classes: class names in label order; without them labels are shown as numbers.
        variant: the DCT variant of :func:`kdscene.losses.dct_frequency_map`.
        eps: its normalisation epsilon (> 0 keeps a 1x1 tap's constant map drawable).
        indices: each image's index in the batch it was picked from, for the titles (default 0, 1, ...).

    Returns:
        The :class:`Panel`.
    """
    shown = unit_range(images.detach().float())
    grey = shown.mean(1)
    networks = [(n, f) for n, f in (("teacher", teacher), ("student", student)) if f is not None]
    cells = [(Column("input"), shown)]
    for layer in range(max(len(f.maps) for _, f in networks)):
        cells += _layer_columns(networks, layer, grey, variant, eps)
    preds = {n: f.logits.argmax(1) for n, f in networks if f.logits is not None}
    indices = range(images.shape[0]) if indices is None else indices
    rows = tuple(_row(i, index, labels, preds, classes) for i, index in enumerate(indices))
    pictures = torch.stack([picture for _, picture in cells], 1).clamp(0, 1).cpu()
    return Panel(pictures, tuple(column for column, _ in cells), rows, notes(variant))
