"""SYNTHETIC chest-radiograph-like images whose content follows a report's findings.

No real CXR image set with reports exists offline here, so image <-> report retrieval is tested
on drawings: a torso with two textured lungs, a spine, a heart and diaphragm domes, plus the
findings the report states positively (negated mentions are not drawn):

    cardiomegaly  a wider heart          effusion   a bright fluid level at a lung base
    pneumothorax  an apical region with no lung markings    nodule  a small bright disc
    opacity       a blurred bright patch (consolidation, pneumonia, infiltrate, edema)

Every image is a pure function of (report id, labels, size): the same report always gives the
same picture. These are NOT radiographs; results on them say that the training loop, the losses
and the retrieval work, not how a model would do on real images.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

FINDINGS = ("cardiomegaly", "effusion", "pneumothorax", "nodule", "opacity")
_PATTERNS = {
    "cardiomegaly": r"cardiomegaly|enlarged (?:heart|cardiac)|heart (?:size )?is (?:mildly |moderately )?enlarged",
    "effusion": r"effusion",
    "pneumothorax": r"pneumothora",
    "nodule": r"nodul|mass\b",
    "opacity": r"opacit|consolidat|pneumonia|infiltrat|edema",
}
_NEGATION = re.compile(r"\b(no|not|without|negative for|free of|resolved|clear of)\b", re.IGNORECASE)


def finding_labels(text: str) -> dict[str, bool]:
    """Positive findings of a report: a keyword in a sentence without a negation before it."""
    found = dict.fromkeys(FINDINGS, False)
    for sentence in re.split(r"(?<=[.;])\s+", text.lower()):
        for name, pat in _PATTERNS.items():
            m = re.search(pat, sentence)
            if m and not _NEGATION.search(sentence[: m.start()]):
                found[name] = True
    return found


def _side(text: str, rng: np.random.Generator) -> int:
    t = text.lower()
    if "right" in t and "left" not in t:
        return 0  # patient's right = image left
    if "left" in t and "right" not in t:
        return 1
    return int(rng.integers(0, 2))


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = rng.random((size // scale + 2, size // scale + 2))
    idx = np.arange(size) / scale
    i0 = idx.astype(int)
    f = idx - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]  # (size, C)
    return rows[:, i0] * (1 - f)[None] + rows[:, i0 + 1] * f[None]


def synth_radiograph(uid: str, text: str, size: int = 64) -> np.ndarray:
    """(size, size) float32 in [0, 1], drawn from the findings of ``text``; seeded by ``uid``."""
    rng = np.random.default_rng(int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16))
    labels = finding_labels(text)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W) in [0, 1)
    jx, jy = rng.normal(0, 0.02, 2)
    img = np.full((size, size), 0.05, np.float32)
    torso = ((x - 0.5 - jx) / 0.46) ** 2 + ((y - 0.55 - jy) / 0.52) ** 2 < 1
    img[torso] = 0.45
    texture = 0.1 * _smooth_noise(rng, size, max(2, size // 16))  # lung markings
    lungs = []
    for cx in (0.31, 0.69):
        lung = ((x - cx - jx) / 0.15) ** 2 + ((y - 0.45 - jy) / 0.3) ** 2 < 1
        img[lung] = 0.12 + texture[lung]
        lungs.append(lung)
    img[np.abs(x - 0.5 - jx) < 0.035] = 0.7  # spine
    heart_w = (0.22 if labels["cardiomegaly"] else 0.13) * rng.uniform(0.95, 1.05)
    heart = ((x - 0.53 - jx) / heart_w) ** 2 + ((y - 0.62 - jy) / 0.12) ** 2 < 1
    img[heart] = 0.62
    img[(y > 0.78 + jy + 0.05 * np.cos((x - 0.5) * 6)) & torso] = 0.55  # diaphragm and abdomen
    if labels["effusion"]:
        s = _side(text, rng)
        level = 0.62 + jy + rng.uniform(-0.03, 0.03)
        img[lungs[s] & (y > level)] = 0.5
    if labels["pneumothorax"]:
        s = _side(text, rng)
        cx = (0.31, 0.69)[s] + jx
        ptx = lungs[s] & (y < 0.32 + jy) & (np.abs(x - cx) > 0.03)
        img[ptx] = 0.03  # no lung markings
    if labels["nodule"]:
        s = int(rng.integers(0, 2))
        cx, cy = (0.31, 0.69)[s] + jx + rng.uniform(-0.05, 0.05), 0.4 + jy + rng.uniform(-0.1, 0.1)
        img[((x - cx) ** 2 + (y - cy) ** 2) < 0.03**2] = 0.75
    if labels["opacity"]:
        s = _side(text, rng)
        cx, cy = (0.31, 0.69)[s] + jx, 0.45 + jy + rng.uniform(-0.1, 0.1)
        blob = np.exp(-(((x - cx) / 0.09) ** 2 + ((y - cy) / 0.12) ** 2))
        img = np.where(lungs[s], img + 0.35 * blob, img)
    img = img + rng.normal(0, 0.02, img.shape)  # quantum noise
    return np.clip(img, 0, 1).astype(np.float32)
