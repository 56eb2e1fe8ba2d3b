"""Turn a class-index mask into a grain label image (one integer per connected grain)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label
from skimage.morphology import reconstruction
from skimage.segmentation import watershed

from ..errors import ConfigError

# Users think in 4-/8-neighbourhoods; skimage counts "hops" (1 = edge neighbours, 2 = edges and corners).
_SKIMAGE_CONNECTIVITY = {4: 1, 8: 2}


def skimage_connectivity(connectivity: int) -> int:
    """Translate 4/8-connectivity into skimage's 1/2 convention, rejecting anything else."""
    if connectivity not in _SKIMAGE_CONNECTIVITY:
        raise ConfigError(f"connectivity must be 4 or 8 (pixel neighbourhood); got {connectivity!r}")
    return _SKIMAGE_CONNECTIVITY[connectivity]


def split_touching_grains(
    binary: np.ndarray, min_distance: int, connectivity: int = 8, min_depth: float = 1.0
) -> np.ndarray:
    """Label one class's pixels, separating touching grains by a watershed of the distance transform."""
    components = label(binary, connectivity=skimage_connectivity(connectivity))
    distance = ndi.distance_transform_edt(binary)
    # The distance ridge of an elongated grain ripples by <1 px from digitisation; without flattening those
    # ripples (an h-maxima transform by greyscale reconstruction) every ripple would seed its own "grain".
    flattened = reconstruction(np.maximum(distance - min_depth, 0.0), distance, method="dilation")
    # labels=components keeps peaks inside their own component; exclude_border=False so grains cut
    # by the image edge still get a seed.
    peaks = peak_local_max(flattened, min_distance=min_distance, labels=components, exclude_border=False)
    # peak_local_max spaces out points on one flat top; grow each peak to its whole plateau so one top = one seed.
    plateaus, _ = ndi.label(
        binary & (flattened == ndi.maximum_filter(flattened, size=3)), structure=np.ones((3, 3), dtype=bool)
    )
    peak_plateaus = np.unique(plateaus[tuple(peaks.T)])
    seeds = np.where(np.isin(plateaus, peak_plateaus[peak_plateaus > 0]), plateaus, 0)
    grains = watershed(-distance, seeds, mask=binary, connectivity=skimage_connectivity(connectivity))
    # Components that received no seed would otherwise vanish from the measurements; keep them whole.
    unseeded = binary & (grains == 0)
    if unseeded.any():
        leftovers = label(unseeded, connectivity=skimage_connectivity(connectivity))
        grains[leftovers > 0] = leftovers[leftovers > 0] + grains.max()
    return grains


def label_grains(
    mask: np.ndarray,
    class_ids: Sequence[int],
    connectivity: int = 8,
    split_touching: bool = False,
    min_distance: int = 7,
    min_area: int = 0,
) -> tuple[np.ndarray, dict[int, int]]:
    """Label every grain of every class; return (label image, {grain label: class id}), labels numbered 1..N."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    grain_class: dict[int, int] = {}
    next_label = 1
    for class_id in class_ids:
        binary = mask == class_id
        if not binary.any():
            continue
        if split_touching:
            class_labels = split_touching_grains(binary, min_distance=min_distance, connectivity=connectivity)
        else:
            class_labels = label(binary, connectivity=skimage_connectivity(connectivity))
        if min_area > 0:
            # bincount instead of skimage's remove_small_objects: its size keyword changed meaning in 0.26
            # (min_size -> max_size) and seglab supports scikit-image >= 0.21.
            too_small = np.bincount(class_labels.ravel()) < min_area
            too_small[0] = False
            class_labels[too_small[class_labels]] = 0
        # Renumber 1..n per class so the final labels are consecutive across classes.
        present = np.unique(class_labels[class_labels > 0])
        lookup = np.zeros(int(class_labels.max()) + 1, dtype=np.int32)
        lookup[present] = np.arange(next_label, next_label + len(present), dtype=np.int32)
        labels[class_labels > 0] = lookup[class_labels[class_labels > 0]]
        for grain_label in range(next_label, next_label + len(present)):
            grain_class[grain_label] = int(class_id)
        next_label += len(present)
    return labels, grain_class
