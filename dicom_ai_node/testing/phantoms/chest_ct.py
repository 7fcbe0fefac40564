"""Testing: chest CT volumes with known lung masks, for training and testing (numpy only).

Each phantom is drawn at random in the spirit of SynthSeg (domain randomisation): shapes,
sizes, intensities, noise and blur change from seed to seed, so a model trained on many
of them learns the anatomy rather than one look. The anatomy, in patient millimetres:

* a body outline (super-ellipse with low-frequency radial deformation, slightly rotated)
  with subcutaneous fat, muscle, ribs (bright arcs that shift along z) and a sternum;
  sometimes arms beside the body; a patient table below it (posterior);
* two lungs filling the thoracic cavity, tapering to the apex, carved medially by the
  mediastinum and the heart and at the base by the diaphragm domes (liver and
  spleen below), with a gravity-dependent density gradient, vessels and sometimes
  nodules inside (labelled lung, as real lung masks include them, or labelled nodule
  on request);
* air that is *not* lung: trachea, main bronchi, oesophagus, a gastric bubble and bowel
  gas under the diaphragm, and the air around the patient;
* a spine (vertebral body, canal, posterior elements) and a descending aorta;
  contrast-enhanced blood in some phantoms.

Orientation follows DICOM LPS with the standard axial display: column index grows to the
patient's left, row index grows to posterior, slice 0 is the most caudal. So the right
lung (label 1) lies on the image left (low column index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import upsample

__all__ = ["LEFT_LUNG", "NODULE", "RIGHT_LUNG", "ChestPhantom", "chest_ct_phantom"]

RIGHT_LUNG = 1
LEFT_LUNG = 2
#: Label of nodule voxels when a phantom is asked to label them (``label_nodules``).
NODULE = 3
#: Nodules per lung (Poisson mean) unless asked otherwise.
NODULES_PER_LUNG = 0.6

_AIR_HU = -1000.0
_F32 = npt.NDArray[np.float32]
_BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ChestPhantom:
    """A generated chest CT volume with its truth.

    Attributes
    ----------
    hu:
        (slices, rows, columns) int16 Hounsfield units.
    labels:
        (slices, rows, columns) uint8; 0 background, 1 right lung, 2 left lung, and 3
        nodule when the phantom was made with ``label_nodules`` (else nodules are lung).
    spacing_mm:
        (slice spacing, row spacing, column spacing).
    """

    hu: npt.NDArray[np.int16]
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]

    def lung_volume_ml(self, label: int) -> float:
        """True volume of one lung in millilitres."""
        voxel_ml = float(np.prod(self.spacing_mm)) / 1000.0
        return float(np.count_nonzero(self.labels == label)) * voxel_ml


def _paint(img: _F32, mask: _BOOL, value: float | _F32) -> None:
    """Set ``img`` to ``value`` where ``mask`` (arithmetic blend: faster than masked stores)."""
    if isinstance(value, np.ndarray):
        img += mask * (value - img)
    else:
        img += mask * (np.float32(value) - img)


def _ellipse_q(
    u: _F32, v: _F32, cu: float, cv: float, ru: float, rv: float
) -> npt.NDArray[np.float32]:
    """Squared normalised elliptic radius: <= 1 inside the ellipse."""
    q: _F32 = (((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2).astype(np.float32)
    return q


def _harmonics(
    rng: np.random.Generator, theta: _F32, orders: range, amplitude: float
) -> npt.NDArray[np.float32]:
    """Low-frequency radial deformation 1 + sum a_k cos(k theta + phi_k)."""
    out = np.ones_like(theta)
    for k in orders:
        a = rng.uniform(0.0, amplitude) / math.sqrt(k)
        out += np.float32(a) * np.cos(k * theta + np.float32(rng.uniform(0, 2 * math.pi)))
    return out


@dataclass(frozen=True)
class _Tissue:
    """Intensities (HU) and image quality of one phantom."""

    fat: float
    muscle: float
    mediastinum: float
    blood: float
    myocardium: float
    liver: float
    spleen: float
    bone: float
    marrow: float
    rib: float
    lung: float
    lung_gradient: float
    vessel: float
    noise_sd: float
    blur: float

    @staticmethod
    def draw(rng: np.random.Generator) -> _Tissue:
        contrast = rng.random() < 0.4
        blood = rng.uniform(150, 380) if contrast else rng.uniform(30, 50)
        return _Tissue(
            fat=rng.uniform(-130, -70),
            muscle=rng.uniform(25, 65),
            mediastinum=rng.uniform(-60, 50),
            blood=blood,
            myocardium=rng.uniform(40, 70) + (40 if contrast else 0),
            liver=rng.uniform(45, 70) + (rng.uniform(30, 80) if contrast else 0),
            spleen=rng.uniform(40, 60) + (rng.uniform(40, 100) if contrast else 0),
            bone=rng.uniform(450, 1100),
            marrow=rng.uniform(120, 300),
            rib=rng.uniform(250, 800),
            lung=rng.uniform(-900, -700),
            lung_gradient=rng.uniform(0, 110),
            vessel=rng.uniform(0, 60) if not contrast else rng.uniform(60, 250),
            noise_sd=rng.uniform(4, 40),
            blur=rng.uniform(0.0, 0.25),
        )


@dataclass(frozen=True)
class _Track:
    """A straight 3-D tube (a vessel) or sphere (a nodule) inside one lung, in body mm."""

    u: float
    v: float
    z: float
    du: float
    dv: float
    dz: float
    length: float
    r0: float
    r1: float
    label: int


class _Scene:
    """The random anatomy of one phantom and the 2-D maps needed to draw its slices."""

    def __init__(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        nodules_per_lung: float = NODULES_PER_LUNG,
        label_nodules: bool = False,
    ) -> None:
        self.rng = rng
        self.nodules_per_lung = nodules_per_lung
        self.label_nodules = label_nodules
        self.shape = shape
        self.spacing = spacing
        self.tissue = _Tissue.draw(rng)
        self._draw_geometry()
        self._draw_grid()
        self._draw_body()
        self._draw_lungs()
        self._draw_organs()
        self._draw_static()
        self.tracks = self._draw_tracks()
        self.gas = self._draw_gas()

    # ------------------------------------------------------------------ drawing
    def _draw_geometry(self) -> None:
        rng = self.rng
        n, rows, cols = self.shape
        dz, dy, dx = self.spacing
        fov_x, fov_y = cols * dx, rows * dy
        fit = rng.uniform(0.80, 0.97) if rng.random() > 0.12 else rng.uniform(0.97, 1.1)
        self.bu = min(rng.uniform(130, 195), fit * fov_x / 2)
        self.bv = min(self.bu * rng.uniform(0.58, 0.82), 0.43 * fov_y)
        self.cx = rng.uniform(-0.04, 0.04) * fov_x
        self.cy = rng.uniform(-0.07, 0.03) * fov_y
        self.angle = math.radians(rng.uniform(-7, 7))
        z_len = n * dz
        self.z_len = z_len
        r = rng.random()
        self.z0 = z_len * (-rng.uniform(0.05, 0.3) if r < 0.15 else rng.uniform(0.02, 0.16))
        r = rng.random()
        self.z1 = z_len * (1 + rng.uniform(0.05, 0.3) if r < 0.15 else 1 - rng.uniform(0.0, 0.1))
        self.body_taper = rng.uniform(-0.1, 0.06)

    def _draw_grid(self) -> None:
        _, rows, cols = self.shape
        _, dy, dx = self.spacing
        x = ((np.arange(cols, dtype=np.float32) + 0.5) - cols / 2) * np.float32(dx)
        y = ((np.arange(rows, dtype=np.float32) + 0.5) - rows / 2) * np.float32(dy)
        xx, yy = np.meshgrid(x - np.float32(self.cx), y - np.float32(self.cy))
        c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        self.u = (c * xx + s * yy).astype(np.float32)  # towards patient left
        self.v = (-s * xx + c * yy).astype(np.float32)  # towards posterior
        self.y_img = np.broadcast_to(y[:, None], (rows, cols))
        self.x_img = np.broadcast_to(x[None, :], (rows, cols))

    def _draw_body(self) -> None:
        rng, u, v = self.rng, self.u, self.v
        p = rng.uniform(2.0, 2.8)
        theta = np.arctan2(v / self.bv, u / self.bu).astype(np.float32)
        rho = ((np.abs(u) / self.bu) ** p + (np.abs(v) / self.bv) ** p) ** (1 / p)
        rho = rho / _harmonics(rng, theta, range(2, 6), 0.05)
        r = np.hypot(u, v)
        self.r = r.astype(np.float32)
        self.q = (r / np.maximum(rho, 1e-3)).astype(np.float32)  # boundary radius per ray
        self.fat_mm = rng.uniform(4, 35)
        self.muscle_mm = rng.uniform(5, 18)
        self.rib_mm = rng.uniform(6, 11)
        n_ribs = int(rng.integers(9, 16))
        self.rib_cos = np.cos(n_ribs * theta).astype(np.float32)
        self.rib_sin = np.sin(n_ribs * theta).astype(np.float32)
        self.rib_cut = rng.uniform(0.1, 0.6)
        self.rib_phase = rng.uniform(0, 2 * math.pi)
        self.rib_twist = rng.uniform(0.02, 0.06) * rng.choice([-1.0, 1.0])
        self.spine_v = self.bv * rng.uniform(0.48, 0.62)
        self.spine_r = rng.uniform(13, 21)
        extra = rng.uniform(15, 35) * np.exp(-((u / rng.uniform(35, 55)) ** 2)) * (v > 0)
        self.wall_extra = extra.astype(np.float32)

    def _draw_lungs(self) -> None:
        rng, u, v = self.rng, self.u, self.v
        self.med_w = rng.uniform(6, 16)
        self.med_w_top = rng.uniform(0, 15)
        self.t_full = rng.uniform(0.35, 0.6)
        self.lung_q: dict[int, _F32] = {}
        self.lung_c: dict[int, tuple[float, float]] = {}
        self.lung_shape: dict[int, tuple[_F32, _F32]] = {}
        for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
            cu = side * self.bu * rng.uniform(0.40, 0.55)
            cv = self.bv * rng.uniform(-0.05, 0.15)
            ru, rv = self.bu * rng.uniform(0.42, 0.55), self.bv * rng.uniform(0.8, 1.0)
            self.lung_q[label] = _ellipse_q(u, v, cu, cv, ru, rv)
            self.lung_c[label] = (cu, cv)
            theta = np.arctan2(v - cv, u - cu).astype(np.float32)
            shapes = (_harmonics(rng, theta, range(1, 4), 0.12) for _ in range(2))
            self.lung_shape[label] = (next(shapes) ** 2, next(shapes) ** 2)
        grad = self.tissue.lung + self.tissue.lung_gradient * v / self.bv
        # smooth low-frequency texture: a coarse random grid, upsampled bilinearly
        coarse = rng.normal(0, rng.uniform(0, 30), (6, 6)).astype(np.float32)
        self.lung_hu = (grad + upsample(coarse, u.shape)).astype(np.float32)

    def _draw_organs(self) -> None:
        rng, u, v, bu, bv = self.rng, self.u, self.v, self.bu, self.bv
        zl = self.z1 - self.z0
        hu_, hv_ = bu * rng.uniform(0.03, 0.2), -bv * rng.uniform(0.1, 0.3)
        self.heart_q = _ellipse_q(
            u, v, hu_, hv_, bu * rng.uniform(0.22, 0.33), bv * rng.uniform(0.35, 0.5)
        )
        self.heart_z = (self.z0 + zl * rng.uniform(0.15, 0.32), zl * rng.uniform(0.16, 0.26))
        self.dome_q: dict[int, _F32] = {}
        self.dome_z: dict[int, tuple[float, float]] = {}
        for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
            cu, cv = self.lung_c[label]
            self.dome_q[label] = _ellipse_q(
                u,
                v,
                cu * rng.uniform(0.8, 1.05),
                cv - bv * rng.uniform(0.0, 0.2),
                bu * rng.uniform(0.4, 0.55),
                bv * rng.uniform(0.75, 0.95),
            )
            top = self.z0 + zl * (rng.uniform(0.12, 0.3) + (0.04 if side < 0 else 0.0))
            dz = (top - self.z0) / 0.69 + 1e-3
            self.dome_z[label] = (top - dz, dz)
        au, av = rng.uniform(12, 30), self.spine_v - self.spine_r - rng.uniform(8, 16)
        self.aorta = _ellipse_q(u, v, au, av, *(2 * [rng.uniform(9, 15)])) <= 1
        tu, tv = rng.uniform(-6, 6), self.spine_v - self.spine_r - rng.uniform(22, 38)
        self.trachea_c = (tu, tv)
        self.trachea_r = rng.uniform(7, 11)
        self.trachea_q = _ellipse_q(u, v, tu, tv, 1.0, 1.0)
        self.carina_z = self.z0 + zl * rng.uniform(0.55, 0.72)
        self.bronchus_len = rng.uniform(20, 45)
        self.oesophagus = (
            _ellipse_q(u, v, rng.uniform(-4, 8), tv + self.trachea_r + 5, *(2 * [3.0])) <= 1
            if rng.random() < 0.5
            else np.zeros_like(self.aorta)
        )

    def _draw_static(self) -> None:
        """Spine, arms and table: the same in every slice."""
        rng, u, v, t = self.rng, self.u, self.v, self.tissue
        base = np.full(u.shape, _AIR_HU, np.float32)
        # table below the body (in image axes, it does not rotate with the patient)
        if rng.random() < 0.9:
            body = self.q * np.float32(1 + abs(self.body_taper) / 2) >= self.r
            y_body = float(self.y_img[body].max()) if body.any() else self.cy + self.bv
            x = self.x_img
            top = y_body + rng.uniform(-2, 6) - rng.uniform(0, 4e-4) * x**2
            plate = rng.uniform(3, 8)
            core = rng.uniform(15, 50)
            y = self.y_img
            inside = np.abs(x) < rng.uniform(180, 260)
            _paint(base, inside & (y >= top) & (y < top + plate), rng.uniform(100, 500))
            foam = inside & (y >= top + plate) & (y < top + plate + core)
            _paint(base, foam, rng.uniform(-900, -400))
            _paint(base, inside & (y >= top + plate + core) & (y < top + 2 * plate + core), 300.0)
        if rng.random() < 0.3:
            for side in (-1.0, 1.0):
                au = side * (self.bu + rng.uniform(40, 80))
                av = self.bv * rng.uniform(-0.3, 0.3)
                arm = _ellipse_q(u, v, au, av, rng.uniform(30, 45), rng.uniform(35, 55)) <= 1
                _paint(base, arm, t.muscle)
                bone = _ellipse_q(u, v, au, av, *(2 * [rng.uniform(9, 13)]))
                _paint(base, bone <= 1, t.bone)
                _paint(base, bone <= 0.4, t.marrow)
        self.base = base
        sv, sr = self.spine_v, self.spine_r
        body_q = _ellipse_q(u, v, 0.0, sv, sr, sr * rng.uniform(0.85, 1.0))
        canal = _ellipse_q(u, v, 0.0, sv + sr + 7, 7.0, 7.0) <= 1
        process = (np.abs(u) < rng.uniform(3, 7)) & (v > sv + sr + 10) & (v < sv + sr + 40)
        lamina = (np.abs(u) < 22) & (np.abs(v - (sv + sr + 14)) < 4)
        spine_hu = np.full(u.shape, t.bone, np.float32)
        _paint(spine_hu, body_q <= 0.7, t.marrow)
        _paint(spine_hu, canal, 15.0)
        self.spine = (body_q <= 1) | canal | process | lamina
        self.spine_hu = spine_hu
        self.spine_keepout = (body_q <= 1.6) | (process & (v < sv + sr + 25))

    def _draw_tracks(self) -> list[_Track]:
        rng, zl = self.rng, self.z1 - self.z0
        tracks: list[_Track] = []
        for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
            cu, cv = self.lung_c[label]
            hz = self.z0 + zl * rng.uniform(0.4, 0.6)
            for _ in range(int(rng.integers(40, 120))):
                d = rng.normal(size=3)
                d[0] = side * abs(d[0])
                d /= np.linalg.norm(d)
                if abs(d[2]) < 0.35:
                    d[2] = math.copysign(0.35, d[2])
                    d /= np.linalg.norm(d)
                f = rng.uniform(0, 0.6)  # start partway along, to fill the periphery
                tracks.append(
                    _Track(
                        u=side * self.med_w + (cu - side * self.med_w) * f + rng.normal(0, 8),
                        v=cv * (1 - f) + rng.normal(0, 15),
                        z=hz + rng.normal(0, 0.1 * zl),
                        du=float(d[0]),
                        dv=float(d[1]),
                        dz=float(d[2]),
                        length=rng.uniform(30, 0.8 * zl + 30),
                        r0=rng.uniform(1.0, 4.5) * (1 - 0.5 * f),
                        r1=rng.uniform(0.5, 1.0),
                        label=label,
                    )
                )
            for _ in range(int(rng.poisson(self.nodules_per_lung))):  # spheres (dz = 0)
                r = rng.uniform(3, 12)
                tracks.append(
                    _Track(
                        u=cu + rng.normal(0, 20),
                        v=cv + rng.normal(0, 20),
                        z=self.z0 + zl * rng.uniform(0.2, 0.9),
                        du=0.0,
                        dv=0.0,
                        dz=0.0,
                        length=r,
                        r0=r,
                        r1=r,
                        label=label,
                    )
                )
        return tracks

    def _draw_gas(self) -> list[tuple[float, float, float, float, float, float]]:
        """Gas pockets under the diaphragm (u, v, z, ru, rv, rz): not lung."""
        rng = self.rng
        gas = []
        lc = self.lung_c[LEFT_LUNG]
        top = self.dome_z[LEFT_LUNG][0] + self.dome_z[LEFT_LUNG][1]
        if rng.random() < 0.5:  # gastric bubble under the left dome
            r = rng.uniform(12, 35)
            gas.append((lc[0], lc[1] - 0.25 * self.bv, top - r - 15, r, 0.8 * r, r))
        for _ in range(int(rng.integers(0, 8))):
            z = rng.uniform(self.z0 - 150, min(top, self.z0 + 30))
            r = rng.uniform(5, 20)
            u = rng.uniform(-0.6, 0.6) * self.bu
            gas.append((u, rng.uniform(-0.6, 0.1) * self.bv, z, r, r * rng.uniform(0.5, 1.0), r))
        return gas

    # ------------------------------------------------------------------ rendering
    def render(self, k: int) -> tuple[_F32, npt.NDArray[np.uint8]]:
        """Draw slice ``k``: HU (float32, before noise) and labels."""
        z = (k + 0.5) * self.spacing[0]
        img = self.base.copy()
        zt = z / self.z_len - 0.5
        scale = np.float32(1 + self.body_taper * zt)
        depth = self.q * scale - self.r  # mm inside the skin along the ray
        t = self.tissue
        body = depth >= 0
        _paint(img, body, t.muscle)
        _paint(img, body & (depth < self.fat_mm), t.fat)
        rib_start = self.fat_mm + self.muscle_mm
        wall = rib_start + self.rib_mm + 3
        cavity = depth >= wall + self.wall_extra
        _paint(img, cavity, t.mediastinum)
        psi = self.rib_phase + self.rib_twist * z
        ribs = self.rib_cos * np.float32(math.cos(psi)) - self.rib_sin * np.float32(math.sin(psi))
        band = (depth >= rib_start) & (depth < rib_start + self.rib_mm)
        _paint(img, band & (ribs > self.rib_cut), t.rib)
        _paint(img, self.spine, self.spine_hu)
        _paint(img, self.aorta, t.blood)
        heart = self._ellipsoid(self.heart_q, self.heart_z, z)
        _paint(img, heart, t.myocardium)
        _paint(img, self._ellipsoid(self.heart_q * np.float32(1.5), self.heart_z, z), t.blood)
        domes = {lab: self._dome(lab, z) & cavity for lab in (RIGHT_LUNG, LEFT_LUNG)}
        _paint(img, domes[RIGHT_LUNG], t.liver)
        _paint(img, domes[LEFT_LUNG], t.spleen)
        labels = self._lungs(z, cavity, heart, domes)
        lung = labels > 0
        _paint(img, lung, self.lung_hu)
        self._tubes(img, labels, z)
        self._air(img, labels, domes, z)
        return img, labels

    def _ellipsoid(self, q: _F32, zc_dz: tuple[float, float], z: float) -> _BOOL:
        zc, dz = zc_dz
        f = 1 - ((z - zc) / dz) ** 2
        if f <= 0:
            return np.zeros(q.shape, bool)
        result: _BOOL = q <= f
        return result

    def _dome(self, label: int, z: float) -> _BOOL:
        zc, dz = self.dome_z[label]
        q = self.dome_q[label]
        if z <= zc:  # below the dome's widest section: liver/spleen at full size
            result: _BOOL = q <= 1
            return result
        return self._ellipsoid(q, (zc, dz), z)

    def _lungs(
        self, z: float, cavity: _BOOL, heart: _BOOL, domes: dict[int, _BOOL]
    ) -> npt.NDArray[np.uint8]:
        labels = np.zeros(self.u.shape, np.uint8)
        if not self.z0 < z < self.z1:
            return labels
        t = (z - self.z0) / (self.z1 - self.z0)
        size = min(1.0, (1 - t) / (1 - self.t_full)) ** 0.6 if t > self.t_full else 1.0
        w = float(np.clip(t, 0, 1))
        med = self.med_w + self.med_w_top * t
        keep = cavity & ~heart & ~self.spine_keepout & ~self.aorta
        for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
            a, b = self.lung_shape[label]
            limit = (np.float32(size**2 * (1 - w)) * a) + (np.float32(size**2 * w) * b)
            lung = (self.lung_q[label] <= limit) & keep & ~domes[label]
            lung &= (self.u * np.float32(side)) > med
            labels += lung.astype(np.uint8) * np.uint8(label)
        airway = self._airway(z, 2.5)
        if airway is not None:
            labels[airway] = 0
        return labels

    def _airway(self, z: float, wall: float) -> _BOOL | None:
        """Trachea or main bronchi with ``wall`` mm added to the radius; None below them."""
        r = self.trachea_r + wall
        if z >= self.carina_z:
            result: _BOOL = self.trachea_q <= r * r
            return result
        f = (self.carina_z - z) / self.bronchus_len
        if f > 1:
            return None
        tu, tv = self.trachea_c
        mask = np.zeros(self.u.shape, bool)
        for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
            cv = self.lung_c[label][1]
            bu = tu + f * (side * (self.med_w + 5) - tu)  # to the hilum, not into the lung
            bv = tv + f * 0.3 * (cv - tv)
            mask |= _ellipse_q(self.u, self.v, bu, bv, 1.0, 1.0) <= (0.7 * r) ** 2
        return mask

    def _air(
        self, img: _F32, labels: npt.NDArray[np.uint8], domes: dict[int, _BOOL], z: float
    ) -> None:
        airway = self._airway(z, 2.5)
        lumen = self._airway(z, 0.0)
        if airway is not None and lumen is not None:
            _paint(img, airway & ~lumen, self.tissue.mediastinum + 30)
            _paint(img, lumen, _AIR_HU)
        _paint(img, self.oesophagus, _AIR_HU)
        below = domes[RIGHT_LUNG] | domes[LEFT_LUNG]
        for u, v, zc, ru, rv, rz in self.gas:
            f = 1 - ((z - zc) / rz) ** 2
            if f <= 0:
                continue
            pocket = _ellipse_q(self.u, self.v, u, v, ru, rv) <= f
            _paint(img, pocket & below & (labels == 0), _AIR_HU)

    def _tubes(self, img: _F32, labels: npt.NDArray[np.uint8], z: float) -> None:
        """Draw vessels and nodules crossing this slice, only well inside their lung."""
        _, dy, dx = self.spacing
        rows, cols = labels.shape
        c, s = math.cos(self.angle), math.sin(self.angle)
        for tr in self.tracks:
            if tr.dz == 0.0:  # nodule
                h = tr.r0**2 - (z - tr.z) ** 2
                if h <= 0:
                    continue
                pu, pv, r = tr.u, tr.v, math.sqrt(h)
            else:
                sa = (z - tr.z) / tr.dz
                if not 0 <= sa <= tr.length:
                    continue
                pu, pv = tr.u + sa * tr.du, tr.v + sa * tr.dv
                r = tr.r0 + (tr.r1 - tr.r0) * sa / tr.length
            x = self.cx + c * pu - s * pv
            y = self.cy + s * pu + c * pv
            col = x / dx + cols / 2 - 0.5
            row = y / dy + rows / 2 - 0.5
            mark = NODULE if tr.dz == 0.0 and self.label_nodules else None
            _stamp(
                img, labels, tr.label, row, col, r / dy, r / dx, 2.0 / dx, self.tissue.vessel, mark
            )


def _stamp(
    img: _F32,
    labels: npt.NDArray[np.uint8],
    label: int,
    row: float,
    col: float,
    r_rows: float,
    r_cols: float,
    margin: float,
    value: float,
    mark: int | None = None,
) -> None:
    """Draw a filled ellipse of ``value`` where ``labels == label``, if it lies inside.

    With ``mark``, the ellipse's pixels get that label too.
    """
    rows, cols = labels.shape
    hr, hc = r_rows + margin, r_cols + margin
    probe_r = np.clip(np.round([row, row - hr, row + hr, row, row]).astype(int), 0, rows - 1)
    probe_c = np.clip(np.round([col, col, col, col - hc, col + hc]).astype(int), 0, cols - 1)
    if not bool(np.all(labels[probe_r, probe_c] == label)):
        return
    r0, r1 = max(int(row - r_rows), 0), min(int(row + r_rows) + 2, rows)
    c0, c1 = max(int(col - r_cols), 0), min(int(col + r_cols) + 2, cols)
    if r0 >= r1 or c0 >= c1:
        return
    yy = (np.arange(r0, r1, dtype=np.float32)[:, None] - row) / max(r_rows, 0.5)
    xx = (np.arange(c0, c1, dtype=np.float32)[None, :] - col) / max(r_cols, 0.5)
    disk = (yy**2 + xx**2 <= 1) & (labels[r0:r1, c0:c1] == label)
    window = img[r0:r1, c0:c1]
    _paint(window, disk, value)
    if mark is not None:
        labels[r0:r1, c0:c1][disk] = mark


def _blur_noise(img: _F32, rng: np.random.Generator, sd: float, w: float) -> None:
    """Add white noise, then a mild separable [w, 1-2w, w] blur (makes the noise correlated)."""
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sd)
    if w <= 0:
        return
    for axis in (0, 1):
        a = np.moveaxis(img, axis, 0)
        prev = a[:-1].copy()
        nxt = a[1:].copy()
        a *= np.float32(1 - 2 * w)
        a[1:] += np.float32(w) * prev
        a[:-1] += np.float32(w) * nxt
        a[0] += np.float32(w) * prev[0]  # replicate the edges
        a[-1] += np.float32(w) * nxt[-1]


def chest_ct_phantom(
    slices: int = 120,
    rows: int = 256,
    columns: int = 256,
    spacing_mm: tuple[float, float, float] = (2.5, 1.4, 1.4),
    seed: int = 0,
    *,
    nodules_per_lung: float = NODULES_PER_LUNG,
    label_nodules: bool = False,
) -> ChestPhantom:
    """Generate a randomised chest CT phantom.

    Parameters
    ----------
    slices, rows, columns:
        Shape of the volume; slice 0 is the most caudal.
    spacing_mm:
        (slice spacing, row spacing, column spacing) in mm. The anatomy is drawn in mm,
        so a small field of view may crop the body (never most of the lungs).
    seed:
        Seed for every random choice; the same arguments give the same phantom.
    nodules_per_lung:
        Mean number of nodules per lung (Poisson): solid spheres of 6-24 mm diameter,
        well inside the lung.
    label_nodules:
        Label nodule voxels :data:`NODULE` instead of lung.

    Returns
    -------
    ChestPhantom
        The volume (int16 HU, clipped to [-1024, 3071]) and its truth.
    """
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))
    rng = np.random.default_rng(seed)
    scene = _Scene(rng, (slices, rows, columns), spacing, nodules_per_lung, label_nodules)
    noise_rng = np.random.default_rng([seed, 1])
    hu = np.empty((slices, rows, columns), np.int16)
    labels = np.empty((slices, rows, columns), np.uint8)
    for k in range(slices):
        img, lab = scene.render(k)
        _blur_noise(img, noise_rng, scene.tissue.noise_sd, scene.tissue.blur)
        np.clip(img, -1024, 3071, out=img)
        hu[k] = np.rint(img)
        labels[k] = lab
    return ChestPhantom(hu=hu, labels=labels, spacing_mm=spacing)
