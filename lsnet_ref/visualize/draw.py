"""The figures, drawn with matplotlib's Agg canvas (no pyplot, no display): the optional `viz` extra.

Every figure has a fixed size in pixels (FIGURE_SIZES, width x height at FIGURE_DPI), so that the PNGs
of one command can be compared and laid out side by side.
"""
from .files import write_atomically
from .measure import erf_display

__all__ = ["FIGURE_DPI", "FIGURE_SIZES", "MatplotlibMissingError", "draw_aggregation", "draw_erf",
           "draw_features", "require_matplotlib"]

FIGURE_DPI = 100
FIGURE_SIZES = {"erf": (700, 600), "aggregation": (1000, 500), "features": (1500, 500)}  # pixels


class MatplotlibMissingError(ImportError):
    """Drawing was asked for where matplotlib is not installed."""


def require_matplotlib():
    """Import matplotlib's object-oriented API, or raise MatplotlibMissingError saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MatplotlibMissingError(
            f"the figures need matplotlib ({error}); install the extra: pip install 'lsnet-ref[viz]'"
        ) from error
    return Figure, FigureCanvasAgg


def _figure(kind):
    figure_class, canvas_class = require_matplotlib()
    width, height = FIGURE_SIZES[kind]
    figure = figure_class(figsize=(width / FIGURE_DPI, height / FIGURE_DPI), dpi=FIGURE_DPI)
    canvas_class(figure)
    return figure


def _save(figure, path):
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=FIGURE_DPI))


def _bare(axes, title):
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])


def draw_erf(path, erf, title, areas):
    """The ERF heat map, log10(x + 1) scaled to [0, 1] (as RepLKNet shows it), with a colour bar and the
    high-contribution area ratios `areas` ((t, side, ratio) triples) written below."""
    figure = _figure("erf")
    axes = figure.add_subplot()
    image = axes.imshow(erf_display(erf), cmap="RdYlGn", vmin=0.0, vmax=1.0)
    _bare(axes, title)
    figure.colorbar(image, ax=axes, label="log10(contribution + 1), scaled to [0, 1]")
    ratios = ", ".join(f"{fraction:.0%}: {'-' if ratio is None else f'{ratio:.3f}'}" for fraction, _, ratio in areas)
    figure.text(0.45, 0.05, f"high-contribution area ratio  {ratios}", ha="center", fontsize=9)
    _save(figure, path)


def _map_over(axes, pixels, values, alpha):
    """`values` (h, w) stretched bilinearly over the image `pixels` (H, W, 3); returns the colour-mapped layer."""
    height, width = pixels.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    return axes.imshow(values, cmap="inferno", interpolation="bilinear", extent=extent, alpha=alpha)


def draw_aggregation(path, pixels, values, title):
    """The image, and the aggregation map (h, w) upsampled to it and overlaid, with a colour bar."""
    figure = _figure("aggregation")
    left, right = figure.subplots(1, 2)
    left.imshow(pixels)
    _bare(left, "image")
    right.imshow(pixels)
    layer = _map_over(right, pixels, values, alpha=0.6)
    _bare(right, title)
    figure.colorbar(layer, ax=right, label="total |SKA coefficient|, channel mean")
    _save(figure, path)


def draw_features(path, pixels, lkp_map, ska_map, title):
    """The image, mean |LKP kernel| and mean |SKA output| (each (h, w), upsampled to the image), side by side."""
    figure = _figure("features")
    axes = figure.subplots(1, 3)
    axes[0].imshow(pixels)
    _bare(axes[0], title)
    for ax, values, label in ((axes[1], lkp_map, "LKP output: mean |kernel|"),
                              (axes[2], ska_map, "SKA output: mean |feature|")):
        layer = _map_over(ax, pixels, values, alpha=1.0)
        _bare(ax, label)
        figure.colorbar(layer, ax=ax, fraction=0.046, pad=0.04)
    _save(figure, path)
