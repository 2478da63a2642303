"""One figure style for interp: seaborn theme, paper column sizes, and the helpers every analysis draws with.

    import interp.plot as ip
    ip.style()                                              # once, before drawing
    fig, ax = ip.figure()                                   # one column wide
    ip.layer_curve(ax, layers, values, label="answer position")   # values: [N, L] → mean and 95% band
    ip.save(fig, "figures", "vision_attention_ratio")       # → .png (300 dpi) and .pdf

Helpers take plain numbers (numpy arrays / lists), never models, so a figure can be redrawn from the JSON
an analysis saved; they draw only (intervals come from `interp.stats`). Sizes are in inches: `COLUMN` is one
column of a two-column paper, `FULL` the page width.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np

COLUMN = 3.4  # inches: one column of a two-column paper (CVPR / NeurIPS-style)
FULL = 7.0  # inches: full text width
DPI = 300

# One colour per concept, the same in every figure (seaborn "colorblind" palette entries).
_CB = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
       "#56b4e9"]
COLORS = {
    "baseline": "#4d4d4d", "answer": _CB[0], "question": _CB[1], "evidence": _CB[3], "background": _CB[7],
    "lowest": _CB[2], "highest": _CB[3], "random": _CB[7], "blind": "#000000",
    "oracle_box": _CB[2], "oracle_ratio": _CB[4], "aif": _CB[0], "aif_normalized": _CB[9], "aif_cap": _CB[1],
    "paper": _CB[0], "normalized": _CB[9], "capped": _CB[1], "low_entropy": _CB[0], "high_mu": _CB[1],
    "high_entropy": _CB[5], "vif": _CB[6], "aif_vif": _CB[8], "vif_reference": _CB[5],
}
BOX_COLOR = "#00e5ff"  # evidence boxes on images: cyan reads on grey scenes and on the heat colormap


def style() -> None:
    """Apply interp's figure style (seaborn "whitegrid", 8 pt type, PDF-embeddable fonts). Idempotent."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _interactive():
        matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette=_CB)
    matplotlib.rcParams.update({
        "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
        "legend.fontsize": 7, "legend.title_fontsize": 7.5, "figure.titlesize": 9,
        "axes.titleweight": "normal", "axes.linewidth": 0.6, "grid.linewidth": 0.4, "grid.color": "#e3e3e3",
        "lines.linewidth": 1.4, "lines.markersize": 3.5, "patch.linewidth": 0.5,
        "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
        "axes.spines.top": False, "axes.spines.right": False,
        # legends sit on a translucent white card so a curve passing under them stays readable
        "legend.frameon": True, "legend.framealpha": 0.85, "legend.facecolor": "white", "legend.edgecolor": "none",
        "legend.borderpad": 0.3,
        "figure.dpi": 150, "savefig.dpi": DPI, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
        "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in PDFs: editable text, accepted by publishers
        "image.interpolation": "nearest", "axes.formatter.useoffset": False,
    })


def _interactive() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def figure(ncols: int = 1, nrows: int = 1, *, width: float | str = "column", aspect: float = 0.72, **kw):
    """`plt.subplots` sized for a paper: width "column" (3.4 in), "full" (7 in) or inches; each panel's height
    is `aspect` × its width. Returns (fig, axes) like `plt.subplots` (constrained layout)."""
    import matplotlib.pyplot as plt

    w = {"column": COLUMN, "full": FULL}.get(width, width)
    h = w / ncols * aspect * nrows
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(w, h), **kw)


def save(fig, out_dir, name: str, *, dpi: int = DPI) -> list[Path]:
    """Write `name`.png (`dpi`, default 300) and `name`.pdf into `out_dir`; close the figure; return the paths."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=dpi)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------- helpers


def layer_curve(ax, layers, values=None, *, mean=None, lo=None, hi=None, label=None, color=None, marker="o",
                ls="-", band_alpha=0.2, **kw):
    """A per-layer curve with a shaded 95% band. Either `values` [N, L] (mean and t-interval per layer,
    `interp.stats.mean_ci`) or `mean`, `lo`, `hi` [L] precomputed. Returns the line."""
    if values is not None:
        from interp.stats import mean_ci

        mean, lo, hi = mean_ci(values)
    x = np.asarray(layers)
    (line,) = ax.plot(x, mean, marker=marker, ls=ls, label=label, color=color, **kw)
    if lo is not None and hi is not None:
        ax.fill_between(x, np.asarray(lo, float), np.asarray(hi, float), color=line.get_color(),
                        alpha=band_alpha, lw=0)
    return line


def integer_ticks(ax, values, axis: str = "x", max_ticks: int = 12) -> None:
    """Integer ticks at `values` (thinned to at most `max_ticks`), e.g. layer indices."""
    v = list(values)
    step = max(1, math.ceil(len(v) / max_ticks))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(v[::step])


def violins(ax, groups, positions=None, *, color=None, log: bool = False, width: float = 0.8,
            inner: str = "quartile", label=None):
    """One violin per group (e.g. per layer) of a 1-D sample each, at `positions` on the x axis.
    `log`: a log10 y axis with the densities estimated in log space (positive values only).
    Returns the positions used."""
    import seaborn as sns

    positions = list(range(len(groups))) if positions is None else list(positions)
    xs, ys = [], []
    for p, g in zip(positions, groups):
        g = np.asarray(g, dtype=np.float64)
        g = g[np.isfinite(g) & ((g > 0) if log else True)]
        xs.append(np.full(len(g), p))
        ys.append(g)
    sns.violinplot(x=np.concatenate(xs), y=np.concatenate(ys), ax=ax, color=color, cut=0, inner=inner,
                   linewidth=0.6, density_norm="width", width=width, native_scale=True, log_scale=(False, log),
                   label=label, inner_kws={"linewidth": 0.6} if inner == "box" else None)
    if log:
        from matplotlib.ticker import LogFormatterSciNotation

        lo, hi = ax.get_ylim()
        if hi / lo < 100:  # fewer than two decades: label the 2× and 5× minor ticks too
            ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    return positions


def log_axis_labels(ax, axis: str = "y") -> None:
    """Label an axis that holds log10 values with 10^k ticks at integer k."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(MaxNLocator(integer=True, nbins=6))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{int(round(v))}}}$"))


def heatmap_overlay(ax, image, heat, *, size=None, extent=None, boxes=(), vmin=0.0, vmax=None, cmap="inferno",
                    gamma: float = 0.5, alpha=(0.2, 0.9), gray: bool = True, interpolation="none"):
    """Draw `image` ([H, W, 3] uint8 or PIL) and over it `heat` ([rows, cols]) stretched to `extent`
    (x0, y0, x1, y1 in image pixels; default the whole image), with evidence `boxes` (x0, y0, x1, y1) outlined.

    size: (W, H) of the original image when `image` is a thumbnail (coordinates are original pixels).
    Colour: `cmap` under a power norm (`gamma` < 1 lifts small values so a diffuse map still shows its
    structure); opacity grows with the value from alpha[0] to alpha[1], so the scene stays visible where the
    model does not look; `gray`: show the scene in grey so its own colours never read as heat.
    interpolation "none": pixels as they are (PDFs embed each image once instead of resampling it).
    Returns a ScalarMappable for a colorbar.
    """
    import matplotlib as mpl
    from matplotlib.patches import Rectangle

    img = np.asarray(image)
    H, W = img.shape[:2] if size is None else (size[1], size[0])
    x0, y0, x1, y1 = extent if extent is not None else (0, 0, W, H)
    h = np.asarray(heat, dtype=np.float64)
    vmax = float(np.nanmax(h)) if vmax is None else vmax
    norm = mpl.colors.PowerNorm(gamma, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-12)
    cm = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    z = np.clip(np.nan_to_num(norm(h).filled(0) if np.ma.isMaskedArray(norm(h)) else norm(h)), 0, 1)
    rgba = cm(z)
    rgba[..., 3] = alpha[0] + (alpha[1] - alpha[0]) * z
    if gray and img.ndim == 3:
        img = np.repeat((img[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114])[..., None], 3, -1).astype(np.uint8)
    ax.imshow(img, extent=(0, W, H, 0), interpolation=interpolation)
    ax.imshow(rgba, extent=(x0, x1, y1, y0), interpolation=interpolation)
    for b in boxes:
        bx0, by0, bx1, by1 = b
        ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, ec=BOX_COLOR, lw=1.0))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)
    return mpl.cm.ScalarMappable(norm=norm, cmap=cm)


def bars(ax, groups, series: dict, *, colors: dict | None = None, width: float = 0.8, ylabel=None,
         ylim=None, value_labels: bool = False, fmt: str = "{:.2f}"):
    """Grouped bar chart with interval whiskers.

    groups: the x categories; series: {name: (means [G], lo [G], hi [G])} (lo/hi may be None), drawn in order
    inside each group. Returns the bar containers by series name.
    """
    names = list(series)
    k = max(1, len(names))
    w = width / k
    x = np.arange(len(groups))
    out = {}
    for j, name in enumerate(names):
        m, lo, hi = (list(series[name]) + [None, None])[:3]
        m = np.asarray(m, dtype=np.float64)
        pos = x - width / 2 + (j + 0.5) * w
        c = (colors or {}).get(name)
        out[name] = ax.bar(pos, m, w * 0.92, label=name, color=c, edgecolor="white", linewidth=0.3)
        if lo is not None and hi is not None:
            lo, hi = np.asarray(lo, float), np.asarray(hi, float)
            err = np.vstack([np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)])
            ax.errorbar(pos, m, yerr=err, fmt="none", ecolor="#222222", elinewidth=0.6, capsize=1.2, capthick=0.6)
        if value_labels:
            for p, v in zip(pos, m):
                if np.isfinite(v):
                    ax.text(p, v, fmt.format(v), ha="center", va="bottom", fontsize=5.5, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.grid(axis="x", visible=False)
    if ylabel:
        ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    return out


def model_title(what: str, model: str, n: int | None = None) -> str:
    """'what' over 'model, n = N': the title convention of every analysis figure (two lines: fits a column)."""
    return f"{what}\n{model}" + (f", n = {n}" if n is not None else "")


# ------------------------------------------------------------------------------------- images in JSON


def image_to_b64(image, max_side: int = 384) -> dict:
    """A PIL image → {"png": base64 str, "size": [W, H] original}; downscaled to `max_side` for storage.
    Coordinates stay in original pixels: draw it with extent (0, W, H, 0)."""
    from PIL import Image

    im = image.convert("RGB")
    W, H = im.size
    s = max_side / max(W, H)
    if s < 1:
        im = im.resize((max(1, round(W * s)), max(1, round(H * s))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return {"png": base64.b64encode(buf.getvalue()).decode("ascii"), "size": [W, H]}


def image_from_b64(obj: dict):
    """Inverse of `image_to_b64`: the stored (possibly downscaled) PIL image; its original size is
    `obj["size"]` (pass it as `heatmap_overlay(..., size=...)`)."""
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(obj["png"]))).convert("RGB")
