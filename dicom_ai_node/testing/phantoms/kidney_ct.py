"""Testing: axial CT volumes through both kidneys, often with a labelled renal tumour.

The training and test data of the built-in kidney tumour model (``models/ct_kidney_tumour``)
and the studies of its tests, and the anatomy of the MR kidney phantoms
(:mod:`dicom_ai_node.testing.phantoms.kidney_mr`). The abdomen around the kidneys is that
of the CT body-region generator (:mod:`dicom_ai_node.testing.phantoms.region_ct`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import box_blur
from .region_ct import Canvas, draw_abdomen, draw_table

__all__ = ["KIDNEY", "TUMOUR", "KidneyPhantom", "kidney_ct_phantom"]

#: Labels of :func:`kidney_ct_phantom`.
KIDNEY, TUMOUR = 1, 2


@dataclass(frozen=True)
class KidneyPhantom:
    """An abdominal CT volume through both kidneys with its truth.

    ``hu`` (slices, rows, columns) int16; ``labels`` uint8: 0 background, 1 kidney
    (cortex, medulla and sinus inside its outline), 2 tumour; ``spacing_mm`` (slice, row,
    column).
    """

    hu: npt.NDArray[np.int16]
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]

    def volume_ml(self, label: int) -> float:
        """True volume of one label in millilitres."""
        return (
            float(np.count_nonzero(self.labels == label)) * float(np.prod(self.spacing_mm)) / 1000
        )


def kidney_ct_phantom(
    slices: int,
    size: int,
    spacing_mm: tuple[float, float, float],
    seed: int,
    *,
    tumour: bool | None = None,
    contrast: bool | None = None,
) -> KidneyPhantom:
    """Axial CT slices through both kidneys, often with a renal tumour.

    The kidneys are ellipsoids (in mm, so consistent from slice to slice) on either side
    of the spine, each with a brighter cortex and a fat-density sinus at the hilum; in
    the nephrographic phase (80 %) the cortex enhances to 140-260 HU, otherwise 28-45
    HU (``contrast`` forces one or the other). A tumour (a sphere of 8-32 mm radius, 70 %
    of phantoms unless ``tumour`` says)
    sits on a kidney's surface, partly outside it, heterogeneous and darker than the
    enhancing cortex (35-110 HU; 20-50 HU unenhanced). Around them the abdomen of
    :func:`region_slice` is drawn anew on each slice (liver, spleen, bowel, aorta,
    spine, fat), so the outline moves a little between slices; one field of view,
    position and rotation per phantom.
    """
    rng = np.random.default_rng([seed, 31])
    dz, dy, dx = spacing_mm
    shape_seed = int(rng.integers(2**31))
    enhanced = rng.random() < 0.8  # drawn either way, so the anatomy stays the same
    contrast = enhanced if contrast is None else contrast
    kidneys = []
    for side in (-1, 1):
        kidneys.append(
            {
                "x": side * rng.uniform(45, 75),
                "y": rng.uniform(25, 55),
                "z": rng.uniform(-12, 12) + (8 if side < 0 else 0),  # the right sits lower
                "ax": rng.uniform(22, 32),
                "ay": rng.uniform(16, 24),
                "az": rng.uniform(45, 62),
                "cortex": rng.uniform(140, 260) if contrast else rng.uniform(28, 45),
                "medulla": rng.uniform(60, 140) if contrast else rng.uniform(25, 40),
            }
        )
    has_tumour = (rng.random() < 0.7) if tumour is None else tumour
    lesion = None
    if has_tumour:
        k = kidneys[int(rng.integers(2))]
        theta, phi = rng.uniform(0, 2 * np.pi), rng.uniform(-1.2, 1.2)
        depth = rng.uniform(0.55, 1.0)  # centre inside the kidney, near its surface
        lesion = {
            "x": k["x"] + depth * k["ax"] * np.cos(theta) * np.cos(phi),
            "y": k["y"] + depth * k["ay"] * np.sin(theta) * np.cos(phi),
            "z": k["z"] + depth * k["az"] * np.sin(phi),
            "r": rng.uniform(8, 32),
            "hu": rng.uniform(35, 110) if contrast else rng.uniform(20, 50),
        }
    half = slices * dz / 2
    hu = np.empty((slices, size, size), np.int16)
    labels = np.zeros((slices, size, size), np.uint8)
    for index in range(slices):
        zmm = -half + (index + 0.5) * dz
        canvas = Canvas(size, dx, np.random.default_rng(shape_seed))  # one pose
        canvas.rng = rng
        bottom = draw_abdomen(canvas, float(np.clip(0.5 + zmm / 200, 0.25, 0.75)), kidneys=False)
        draw_table(canvas, bottom + canvas.u(5, 30))
        label = labels[index]
        for k in kidneys:
            t = 1 - ((zmm - k["z"]) / k["az"]) ** 2
            if t <= 0:
                continue
            scale = float(np.sqrt(t))
            outline = canvas.ellipse(k["x"], k["y"], k["ax"] * scale, k["ay"] * scale)
            canvas.paint(outline, k["cortex"], 12)
            inner = canvas.ellipse(k["x"], k["y"], k["ax"] * scale * 0.7, k["ay"] * scale * 0.7)
            canvas.paint(inner, k["medulla"], 12)
            if scale > 0.5:  # renal sinus fat at the hilum, facing the spine
                hilum = canvas.ellipse(k["x"] * 0.8, k["y"], k["ax"] * scale * 0.3, k["ay"] * 0.35)
                canvas.paint(hilum & outline, rng.uniform(-90, -30), 10)
            label[outline] = KIDNEY
        if lesion is not None:
            t = lesion["r"] ** 2 - (zmm - lesion["z"]) ** 2
            if t > 0:
                mask = canvas.ellipse(lesion["x"], lesion["y"], np.sqrt(t), np.sqrt(t))
                texture = rng.normal(0, 15, mask.sum())
                canvas.hu[mask] = lesion["hu"] + texture
                label[mask] = TUMOUR
        img = box_blur(canvas.hu, rng) + rng.normal(0.0, rng.uniform(3, 25), (size, size))
        hu[index] = np.rint(np.clip(img, -1024, 3071))
    return KidneyPhantom(hu, labels, (float(dz), float(dy), float(dx)))
