"""Gallery of the built-in specimens and their simulated tilt series (writes a PNG).

For each specimen: a colour composite of the central slice (one colour per element),
the HAADF projection at 0°, and the HAADF and first chemical sinograms of the central
slice (45 HAADF tilts ±70°, a chemical map at every 5th; chemical SNR 2.5).

    python examples/phantom_gallery.py [--n 64] [--out phantoms.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from tomosweep.phantoms import TiltScheme, make_specimen, simulate  # noqa: E402

SPECIMENS = ("core_shell_2d", "core_shell_sphere", "nanocubes", "conio_composite", "core_shell_cube")
PALETTE = ("tab:red", "tab:green", "tab:blue", "gold", "tab:purple", "tab:cyan")


def composite(slice_maps: np.ndarray, elements: tuple[str, ...]) -> np.ndarray:
    """(n_el, n, n) → RGB: each voxel in the colour of its cation(s), O only where alone.

    Oxygen accompanies every cation in these oxides; mixing its colour in would tint
    every phase alike, so it is shown only where no other element is present.
    """
    weights = slice_maps.copy()
    if "O" in elements and len(elements) > 1:
        o = elements.index("O")
        others = np.delete(weights, o, axis=0).sum(axis=0)
        weights[o][others > 0] = 0
    total = weights.sum(axis=0)
    share = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    colours = np.array([to_rgb(PALETTE[k % len(PALETTE)]) for k in range(len(elements))])
    rgb = np.einsum("kyz,kc->yzc", share, colours)
    brightness = slice_maps.sum(axis=0)
    return np.clip(rgb * (brightness / max(brightness.max(), 1e-30))[..., None] ** 0.3, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("phantoms.png"))
    args = parser.parse_args()

    scheme = TiltScheme(45, chem_every=5)
    fig, axes = plt.subplots(len(SPECIMENS), 4, figsize=(12, 3 * len(SPECIMENS)), constrained_layout=True)
    for row, name in enumerate(SPECIMENS):
        specimen = make_specimen(name, args.n)
        acq = simulate(specimen, scheme, chem_snr=2.5, rng=0)
        mid = int(np.argmax(specimen.volumes[0].sum(axis=(0, 1))))  # the slice richest in element 0
        panels = [
            (
                composite(specimen.volumes[:, :, :, mid], specimen.elements).transpose(1, 0, 2),
                f"{name}: slice x={mid}",
                None,
            ),
            (acq.haadf[scheme.n_haadf // 2], "HAADF at 0° (y × x)", "gray"),
            (acq.haadf[:, :, mid], "HAADF sinogram (tilt × y)", "gray"),
            (
                acq.chem[0][:, :, mid],
                f"{specimen.elements[0]} sinogram, SNR {acq.snr[specimen.elements[0]]:.1f}",
                "magma",
            ),
        ]
        for ax, (image, title, cmap) in zip(axes[row], panels, strict=True):
            ax.imshow(image, cmap=cmap, origin="lower", aspect="auto")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        legend = ", ".join(
            f"{e}: {PALETTE[k % len(PALETTE)].removeprefix('tab:')}" for k, e in enumerate(specimen.elements)
        )
        axes[row, 0].set_xlabel(legend, fontsize=8)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
