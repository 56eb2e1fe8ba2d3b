"""Tests for seglab.measure: grain geometry against analytic shapes and skimage, units, splitting, outputs, I/O."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.draw import disk
from skimage.measure import label, regionprops

from seglab.measure import (
    measure_grains,
    parse_pixel_size,
    read_mask,
    run_measure,
    write_measurements,
)


def disc_mask(radius: int, size: int | None = None) -> np.ndarray:
    """A binary mask holding one centred disc of the given radius."""
    size = size or 2 * radius + 21
    mask = np.zeros((size, size), dtype=np.uint8)
    rows, cols = disk((size / 2, size / 2 + 0.3), radius)
    mask[rows, cols] = 1
    return mask


def rotated_ellipse_mask(semi_major: float, semi_minor: float, degrees: float, size: int = 240) -> np.ndarray:
    """An ellipse whose major axis is `degrees` counter-clockwise from the image x-axis (y pointing up on screen)."""
    rows, cols = np.mgrid[:size, :size].astype(float)
    x = cols - size / 2 + 0.3
    y = -(rows - size / 2 - 0.2)  # rows grow downwards; geoscientists measure angles with y up
    theta = math.radians(degrees)
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    return ((along / semi_major) ** 2 + (across / semi_minor) ** 2 <= 1.0).astype(np.uint8)


def rotated_rectangle_mask(length: float, width: float, degrees: float, size: int = 240) -> np.ndarray:
    """A rectangle whose long side is `degrees` counter-clockwise from the image x-axis."""
    rows, cols = np.mgrid[:size, :size].astype(float)
    x = cols - size / 2 + 0.3
    y = -(rows - size / 2 - 0.2)
    theta = math.radians(degrees)
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    return ((np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)).astype(np.uint8)


def ramanujan_ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of an ellipse perimeter (error ~1e-10 at these ratios)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def only_row(mask: np.ndarray, **kwargs: object) -> dict[str, object]:
    """Measure a mask expected to hold exactly one grain and return its row."""
    table = measure_grains(mask, **kwargs)
    assert len(table.rows) == 1
    return table.rows[0]


# --- geometry against analytic values -------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [20, 35, 60])
def test_disc_matches_analytic_geometry(radius: int) -> None:
    row = only_row(disc_mask(radius))
    assert row["area_px"] == pytest.approx(math.pi * radius**2, rel=0.02)
    assert row["perimeter_px"] == pytest.approx(2 * math.pi * radius, rel=0.02)
    assert row["equivalent_diameter_px"] == pytest.approx(2 * radius, rel=0.02)
    assert row["major_axis_length_px"] == pytest.approx(2 * radius, rel=0.02)
    assert row["aspect_ratio"] == pytest.approx(1.0, abs=0.03)
    assert row["circularity"] == pytest.approx(1.0, abs=0.03)
    assert row["solidity"] == pytest.approx(1.0, abs=0.03)
    assert row["touches_border"] is False


@pytest.mark.parametrize("side", [30, 64])
def test_axis_aligned_square_geometry(side: int) -> None:
    mask = np.zeros((side + 20, side + 20), dtype=np.uint8)
    mask[10 : 10 + side, 10 : 10 + side] = 1
    row = only_row(mask)
    assert row["area_px"] == side**2
    assert row["equivalent_diameter_px"] == pytest.approx(2 * side / math.sqrt(math.pi), rel=1e-9)
    assert row["aspect_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert row["solidity"] == pytest.approx(1.0)
    assert row["feret_diameter_max_px"] == pytest.approx(side * math.sqrt(2), rel=0.02)
    assert (row["bbox_min_row"], row["bbox_min_col"], row["bbox_max_row"], row["bbox_max_col"]) == (
        10,
        10,
        10 + side,
        10 + side,
    )
    # The Crofton estimator (chosen for discs) integrates over 4 directions; for a square aligned with the grid
    # that quadrature gives pi*(1+sqrt2)/2 * a = 3.79a, i.e. a known 5-6% under-estimate of 4a.
    assert row["perimeter_px"] == pytest.approx(math.pi * (1 + math.sqrt(2)) / 2 * side, rel=0.02)
    assert 0.93 * 4 * side < row["perimeter_px"] < 4 * side


@pytest.mark.parametrize("degrees", [20.0, 35.0, -40.0])
def test_rotated_rectangle_geometry(degrees: float) -> None:
    length, width = 120.0, 40.0
    row = only_row(rotated_rectangle_mask(length, width, degrees))
    assert row["area_px"] == pytest.approx(length * width, rel=0.02)
    # Tilted straight edges are where Crofton is accurate (within ~2.5%).
    assert row["perimeter_px"] == pytest.approx(2 * (length + width), rel=0.03)
    # Second moments of a rectangle are length^2/12 and width^2/12, so the ellipse aspect ratio is length/width.
    assert row["aspect_ratio"] == pytest.approx(length / width, rel=0.02)
    assert row["orientation_deg"] == pytest.approx(degrees, abs=1.0)


@pytest.mark.parametrize("degrees", [0.0, 30.0, 75.0, -40.0, 90.0])
def test_rotated_ellipse_geometry(degrees: float) -> None:
    a, b = 50.0, 20.0
    row = only_row(rotated_ellipse_mask(a, b, degrees))
    assert row["area_px"] == pytest.approx(math.pi * a * b, rel=0.02)
    assert row["perimeter_px"] == pytest.approx(ramanujan_ellipse_perimeter(a, b), rel=0.02)
    assert row["major_axis_length_px"] == pytest.approx(2 * a, rel=0.02)
    assert row["minor_axis_length_px"] == pytest.approx(2 * b, rel=0.02)
    assert row["aspect_ratio"] == pytest.approx(a / b, rel=0.02)
    assert -90.0 < row["orientation_deg"] <= 90.0
    # 90 and -90 are the same axis; compare modulo 180 degrees.
    difference = (row["orientation_deg"] - degrees + 90.0) % 180.0 - 90.0
    assert abs(difference) < 1.0


@pytest.mark.parametrize("degrees", [0.0, 45.0, 20.0, -65.0])
def test_skeleton_length_reads_a_cracks_length_at_any_angle(degrees: float) -> None:
    """A 160x4 px crack: its medial axis about 160 - 4 px long (centre to centre, short of the tips by the width),
    within 5% at any angle (Kulpa's weights; 1 and sqrt(2) would read up to 10% long at 20 degrees)."""
    row = only_row(rotated_rectangle_mask(160.0, 4.0, degrees))
    assert 156 * 0.94 < row["skeleton_length_px"] < 156 * 1.06
    assert only_row(disc_mask(30))["skeleton_length_px"] < 6  # a round grain has next to no medial axis


def test_skeleton_length_of_a_ring_and_the_class_total() -> None:
    """A closed vein of radius 50 reads its circumference; the class total sums its objects (fracture density)."""
    rows, cols = np.mgrid[:140, :260]
    radius = np.hypot(rows - 70, cols - 70)
    mask = ((radius >= 48) & (radius <= 52)).astype(np.uint8)
    mask[60:63, 150:250] = 1  # and a straight 100 px crack
    table = measure_grains(mask, pixel_size="2um")
    lengths = sorted(float(r["skeleton_length_px"]) for r in table.rows)
    assert lengths[0] == pytest.approx(97, rel=0.06) and lengths[1] == pytest.approx(2 * math.pi * 50, rel=0.015)
    total = table.classes[0]
    assert total["total_skeleton_length_px"] == pytest.approx(sum(lengths))
    assert total["total_skeleton_length_um"] == pytest.approx(2 * sum(lengths))


def test_rows_match_skimage_regionprops_on_same_labels() -> None:
    mask = np.zeros((160, 260), dtype=np.uint8)
    mask[:, :160] = disc_mask(25, 160)
    mask[10:40, 170:250] = 2
    mask[60:160, 160:260][rotated_ellipse_mask(30, 12, 60, size=100) > 0] = 2
    table = measure_grains(mask)
    reference = []
    for class_id in (1, 2):
        reference += [(class_id, region) for region in regionprops(label(mask == class_id, connectivity=2))]
    assert len(table.rows) == len(reference) >= 3
    for class_id, region in reference:
        row = next(r for r in table.rows if np.allclose((r["centroid_row_px"], r["centroid_col_px"]), region.centroid))
        assert row["class_id"] == class_id
        assert row["area_px"] == region.area
        assert row["perimeter_px"] == pytest.approx(region.perimeter_crofton)
        assert row["equivalent_diameter_px"] == pytest.approx(region.equivalent_diameter_area)
        assert row["major_axis_length_px"] == pytest.approx(region.axis_major_length)
        assert row["minor_axis_length_px"] == pytest.approx(region.axis_minor_length)
        assert row["solidity"] == pytest.approx(region.solidity)
        assert row["circularity"] == pytest.approx(4 * math.pi * region.area / region.perimeter_crofton**2)
        assert (row["bbox_min_row"], row["bbox_min_col"], row["bbox_max_row"], row["bbox_max_col"]) == region.bbox
        # skimage measures from the row axis; seglab from the x-axis: the two differ by exactly 90 degrees.
        expected = math.degrees(region.orientation) + 90.0
        expected = expected - 180.0 if expected > 90.0 else expected
        assert row["orientation_deg"] == pytest.approx(expected)
    assert [row["label"] for row in table.rows] == list(range(1, len(reference) + 1))
    assert np.array_equal(table.labels > 0, mask > 0)


# --- physical units -----------------------------------------------------------------------------------------------


def test_physical_units_scale_lengths_by_pixel_size_and_areas_by_its_square() -> None:
    mask = rotated_ellipse_mask(40, 15, 25)
    pixels = only_row(mask)
    microns = only_row(mask, pixel_size="0.5 µm")
    assert microns["area_um2"] == pytest.approx(pixels["area_px"] * 0.25)
    for name in (
        "perimeter",
        "equivalent_diameter",
        "major_axis_length",
        "minor_axis_length",
        "feret_diameter_max",
        "skeleton_length",
        "centroid_row",
        "centroid_col",
    ):
        assert microns[f"{name}_um"] == pytest.approx(pixels[f"{name}_px"] * 0.5)
    # Shape descriptors are dimensionless and must not change with the calibration.
    for name in ("aspect_ratio", "circularity", "solidity", "orientation_deg", "area_px"):
        assert microns[name] == pytest.approx(pixels[name])
    as_number = only_row(mask, pixel_size=1.2, unit="mm")
    as_text = only_row(mask, pixel_size="1.2mm")
    assert as_number["area_mm2"] == pytest.approx(as_text["area_mm2"]) == pytest.approx(pixels["area_px"] * 1.44)


def test_class_totals_carry_physical_units() -> None:
    mask = np.zeros((50, 50), dtype=np.uint8)
    mask[5:15, 5:15] = 1
    mask[30:40, 30:50] = 1
    table = measure_grains(mask, pixel_size="2um", keep_border=True)  # the 200-px grain touches the border
    (totals,) = table.classes
    assert totals["count"] == 2
    assert totals["total_area_px"] == 300
    assert totals["total_area_um2"] == pytest.approx(1200.0)
    diameters = [2 * math.sqrt(100 / math.pi), 2 * math.sqrt(200 / math.pi)]
    assert totals["mean_equivalent_diameter_px"] == pytest.approx(np.mean(diameters))
    assert totals["median_equivalent_diameter_um"] == pytest.approx(2 * np.median(diameters))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.65um", (0.65, "um")),
        ("0.65 µm", (0.65, "um")),
        ("0.65μm", (0.65, "um")),
        ("1.2mm", (1.2, "mm")),
        ("500 nm/px", (500.0, "nm")),
        ("1e-3 m", (0.001, "m")),
        ("2 microns", (2.0, "um")),
    ],
)
def test_parse_pixel_size_accepts_common_spellings(text: str, expected: tuple[float, str]) -> None:
    value, unit = parse_pixel_size(text)
    assert value == pytest.approx(expected[0])
    assert unit == expected[1]


@pytest.mark.parametrize("text", ["abc", "0.65", "um", "-1um", "0.65 furlongs", "", "0.65 um um", "1,2mm"])
def test_parse_pixel_size_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="pixel_size must look like 0.65um"):
        parse_pixel_size(text)


def test_parse_pixel_size_rejects_zero_and_unitless_numbers() -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_pixel_size("0um")
    with pytest.raises(ValueError, match="no physical unit"):
        measure_grains(disc_mask(20), pixel_size=0.65)
    with pytest.raises(ValueError, match="unknown length unit"):
        measure_grains(disc_mask(20), pixel_size=0.65, unit="parsec")


# --- touching grains, connectivity, filtering, ignore pixels ------------------------------------------------------


def two_touching_discs() -> np.ndarray:
    mask = np.zeros((120, 200), dtype=np.uint8)
    for centre_col in (70, 125):  # radius 30 each, 55 px apart: they overlap in a narrow neck
        rows, cols = disk((60, centre_col), 30)
        mask[rows, cols] = 1
    return mask


def test_split_touching_separates_two_discs() -> None:
    mask = two_touching_discs()
    assert len(measure_grains(mask).rows) == 1
    split = measure_grains(mask, split_touching=True)
    assert len(split.rows) == 2
    assert sum(row["area_px"] for row in split.rows) == mask.sum()
    for row in split.rows:  # each half keeps most of its disc: pi*30^2 = 2827 minus half the overlap
        assert 2600 < row["area_px"] < 2900
    assert sorted(round(row["centroid_col_px"]) for row in split.rows) == pytest.approx([70, 125], abs=3)


def test_split_touching_does_not_cut_elongated_grains() -> None:
    # The distance ridge of a long tilted rectangle ripples by <1 px; that must not seed extra grains.
    mask = rotated_rectangle_mask(120, 30, 35)
    assert len(measure_grains(mask, split_touching=True).rows) == 1
    three = np.zeros((100, 260), dtype=np.uint8)
    for centre_col in (60, 115, 170):
        rows, cols = disk((50, centre_col), 30)
        three[rows, cols] = 1
    assert len(measure_grains(three, split_touching=True).rows) == 3


def test_connectivity_and_min_area() -> None:
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[5:15, 5:15] = 1
    mask[15:25, 15:25] = 1  # touches the first square only at a corner
    mask[30:32, 30:32] = 1  # a 4-pixel speck
    assert len(measure_grains(mask, min_grain=0).rows) == 2
    assert len(measure_grains(mask, connectivity=4, min_grain=0).rows) == 3
    filtered = measure_grains(mask, connectivity=4, min_area=5, min_grain=0)
    assert [row["area_px"] for row in filtered.rows] == [100, 100]
    assert filtered.classes[0]["total_area_px"] == 200
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        measure_grains(mask, connectivity=6)


def test_area_fractions_exclude_ignore_pixels() -> None:
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10:30, 10:30] = 1  # 400 px
    mask[50:60, 40:70] = 2  # 300 px
    mask[90:100, :] = 255  # 1000 ignored px
    mask[10:30, 19:21] = 255  # cuts the class-1 square into two grains and removes 40 of its pixels
    table = measure_grains(mask, ignore_index=255, class_names=["background", "tourmaline", "quartz"])
    valid = 100 * 100 - 1000 - 40
    assert table.valid_pixels == valid
    by_class = {row["class_name"]: row for row in table.classes}
    assert by_class["tourmaline"]["count"] == 2
    assert by_class["tourmaline"]["total_area_px"] == 360
    assert by_class["tourmaline"]["area_fraction"] == pytest.approx(360 / valid)
    assert by_class["quartz"]["area_fraction"] == pytest.approx(300 / valid)
    background = np.sum(mask == 0) / valid
    assert sum(row["area_fraction"] for row in table.classes) + background == pytest.approx(1.0)
    assert all(row["class_id"] != 255 for row in table.rows)


def test_named_classes_without_grains_are_reported_with_zero_count() -> None:
    table = measure_grains(disc_mask(20), class_names=["background", "tourmaline", "quartz"])
    quartz = next(row for row in table.classes if row["class_name"] == "quartz")
    assert quartz["count"] == 0
    assert quartz["area_fraction"] == 0.0
    assert math.isnan(quartz["mean_equivalent_diameter_px"])


def test_bad_masks_and_class_names_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="2-D array of class indices"):
        measure_grains(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="non-integer"):
        measure_grains(np.full((10, 10), 0.5))
    with pytest.raises(ValueError, match="class_names has only 2 entries"):
        measure_grains(np.array([[0, 1, 2]]), class_names=["background", "tourmaline"])


# --- outputs and the file-level entry point -----------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_write_measurements_writes_csvs_and_pngs(tmp_path: Path) -> None:
    mask = two_touching_discs()
    mask[5:25, 5:45] = 2
    table = measure_grains(
        mask, pixel_size="0.65um", class_names=["background", "tourmaline", "quartz"], split_touching=True
    )
    image = np.random.default_rng(0).random(mask.shape + (3,))
    files = write_measurements(table, tmp_path / "out", image=image)
    assert set(files) == {"grains_csv", "classes_csv", "left_out_csv", "size_distribution_png", "outlined_png"}
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    grains = read_csv(files["grains_csv"])
    assert len(grains) == 3
    assert float(grains[0]["area_um2"]) == pytest.approx(table.rows[0]["area_px"] * 0.65**2)
    classes = read_csv(files["classes_csv"])
    assert [(row["class_name"], int(row["count"])) for row in classes] == [("tourmaline", 2), ("quartz", 1)]
    with Image.open(files["outlined_png"]) as outlined:
        # Small masks are upscaled to >= 800 px on the long side so label numbers are legible; aspect is kept.
        assert outlined.size[0] == 800 and outlined.size[1] == pytest.approx(800 * 120 / 200, abs=1)
        pixels = np.asarray(outlined.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # an actual picture, not a blank canvas
    with Image.open(files["size_distribution_png"]) as histogram:
        assert histogram.size[0] > 100 and histogram.size[1] > 100


def test_write_measurements_handles_a_mask_without_grains(tmp_path: Path) -> None:
    table = measure_grains(np.zeros((30, 30), dtype=np.uint8))
    files = write_measurements(table, tmp_path)
    assert read_csv(files["grains_csv"]) == []
    assert files["size_distribution_png"].stat().st_size > 0


def test_run_measure_reads_binary_png_and_writes_outputs(tmp_path: Path) -> None:
    mask = two_touching_discs() * 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(np.full(mask.shape + (3,), 128, dtype=np.uint8)).save(tmp_path / "image.png")
    result = run_measure(
        tmp_path / "mask.png",
        tmp_path / "image.png",
        out_dir=tmp_path / "out",
        pixel_size="0.65 µm",
        split_touching=True,
        class_names=["background", "tourmaline"],
    )
    assert len(result.table.rows) == 2
    assert {row["class_name"] for row in result.table.rows} == {"tourmaline"}
    assert all(path.stat().st_size > 0 for path in result.files.values())


def test_read_mask_formats(tmp_path: Path) -> None:
    classes = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "mask.tif", classes)
    assert np.array_equal(read_mask(tmp_path / "mask.tif"), classes)
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(tmp_path / "binary.png")
    assert np.array_equal(read_mask(tmp_path / "binary.png"), [[0, 1], [1, 0]])
    # With 255 as the ignore value, a 0/255 mask is left alone rather than turned into foreground.
    assert np.array_equal(read_mask(tmp_path / "binary.png", ignore_index=255), [[0, 255], [255, 0]])
    grey_rgb = np.stack([classes.astype(np.uint8)] * 3, axis=-1)
    Image.fromarray(grey_rgb).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(read_mask(tmp_path / "grey_rgb.png"), classes)


def test_run_measure_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.png"):
        run_measure(tmp_path / "missing.png", out_dir=tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png.*not an image"):
        run_measure(tmp_path / "broken.png", out_dir=tmp_path)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "image.png")
    with pytest.raises(ValueError, match="image.png.*mask.png"):
        run_measure(tmp_path / "mask.png", tmp_path / "image.png", out_dir=tmp_path)


def test_colour_filled_masks_red_background_green_grain(tmp_path: Path) -> None:
    colour = np.zeros((40, 40, 3), dtype=np.uint8)
    colour[...] = (255, 0, 0)
    colour[5:15, 5:15] = (0, 255, 0)
    colour[25:35, 20:30] = (0, 255, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "colour.png"), (colour[..., 1] == 255).astype(np.uint8))
    swapped = read_mask(tmp_path / "colour.png", colors=[[0, 255, 0], [255, 0, 0]])
    np.testing.assert_array_equal(swapped, (colour[..., 0] == 255).astype(np.uint8))
    table = run_measure(tmp_path / "colour.png", out_dir=tmp_path / "out").table
    assert len(table.rows) == 2 and sorted(r["area_px"] for r in table.rows) == [100, 100]


def test_read_mask_keeps_palette_indices(tmp_path: Path) -> None:
    classes = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    palette_mask = Image.fromarray(classes, mode="P")
    palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    palette_mask.save(tmp_path / "palette.png")
    assert np.array_equal(read_mask(tmp_path / "palette.png"), classes)


def test_run_measure_stretches_16_bit_images(tmp_path: Path) -> None:
    mask = disc_mask(20)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    tifffile.imwrite(tmp_path / "image.tif", (np.arange(mask.size).reshape(mask.shape) * 7 + 1000).astype(np.uint16))
    result = run_measure(tmp_path / "mask.png", tmp_path / "image.tif", out_dir=tmp_path / "out", draw_labels=False)
    assert result.table.rows[0]["area_px"] == mask.sum()
    assert result.files["outlined_png"].stat().st_size > 0


MEMBRANE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "membrane" / "train"


@pytest.mark.realdata
@pytest.mark.skipif(not MEMBRANE.is_dir(), reason="../shared/data/membrane is not available")
def test_run_measure_on_real_membrane_mask(tmp_path: Path) -> None:
    # ISBI membrane labels: 255 = cell interior (the "grains"), 0 = membrane.
    mask_path, image_path = MEMBRANE / "label" / "0.png", MEMBRANE / "image" / "0.png"
    cells = np.asarray(Image.open(mask_path)) == 255
    result = run_measure(mask_path, image_path, out_dir=tmp_path, pixel_size="4nm", class_names=["membrane", "cell"],
                         min_grain=0, keep_border=True)  # every object, to compare with skimage
    reference = regionprops(label(cells, connectivity=2))
    assert len(result.table.rows) == len(reference) > 20
    assert sum(row["area_px"] for row in result.table.rows) == cells.sum()
    assert result.table.classes[0]["area_fraction"] == pytest.approx(cells.mean())
    assert sorted(row["area_nm2"] for row in result.table.rows) == pytest.approx(
        sorted(region.area * 16.0 for region in reference)
    )
    assert all(path.stat().st_size > 0 for path in result.files.values())


# --- what counts as a grain: specks and border objects are left out, and said so -------------------------------


def specks_and_border_mask() -> np.ndarray:
    """Two 100-px grains, five specks (1..8 px, one of them on the border) and one large grain cut by the border."""
    mask = np.zeros((60, 60), dtype=np.uint8)
    mask[10:20, 10:20] = 1
    mask[30:40, 30:40] = 1
    for row, col, side in ((5, 40, 1), (45, 10, 2), (50, 50, 2), (25, 50, 1)):
        mask[row:row + side, col:col + side] = 1
    mask[0, 25] = 1  # a 1-px speck on the border: counted as a speck, not as a border object
    mask[20:35, 52:60] = 1  # 120 px touching the right border
    return mask


def test_specks_and_border_objects_are_left_out_and_counted() -> None:
    mask = specks_and_border_mask()
    table = measure_grains(mask, class_names=["background", "grain"])
    assert [row["area_px"] for row in table.rows] == [100, 100]
    assert [row["label"] for row in table.rows] == [1, 2] and table.labels.max() == 2  # kept grains renumbered
    assert table.left_out_counts() == {"small": 5, "border": 1}
    assert table.left_out_note().startswith("left out 6 objects: 5 smaller than 9 px, 1 touching the border")
    assert "keep_border=true" in table.left_out_note()
    grain = table.classes[0]
    assert (grain["count"], grain["left_out_small"], grain["left_out_border"]) == (2, 5, 1)
    assert grain["total_area_px"] == 200
    assert grain["area_fraction"] == pytest.approx(320 / mask.size)  # the cut grain is still that phase's area
    assert int((table.left_out_labels > 0).sum()) == 120 + 1 + 4 + 4 + 1 + 1
    kept = measure_grains(mask, keep_border=True)
    assert sorted(row["area_px"] for row in kept.rows) == [100, 100, 120]
    assert kept.left_out_counts() == {"small": 5, "border": 0}
    everything = measure_grains(mask, keep_border=True, min_grain=0)
    assert len(everything.rows) == 8 and everything.left_out == [] and everything.left_out_note() == ""


def test_min_grain_in_physical_units_shows_pixels_and_units() -> None:
    mask = specks_and_border_mask()
    table = measure_grains(mask, pixel_size="0.5um", min_grain="2um2")  # 2 um2 / 0.25 um2 per px = 8 px
    assert table.min_grain_px == pytest.approx(8.0)
    assert table.left_out_counts()["small"] == 5 and "smaller than 8 px (2 µm²)" in table.left_out_note()
    half = measure_grains(mask, pixel_size="0.5um", min_grain="0.5um2")  # 2 px: the 4-px (1 um2) specks stay
    assert half.left_out_counts()["small"] == 3 and "3 smaller than 2 px (0.5 µm²)" in half.left_out_note()
    assert measure_grains(mask, pixel_size="4nm", min_grain="0.0002 µm²").min_grain_px == pytest.approx(12.5)
    assert measure_grains(mask, min_grain="4px").left_out_counts()["small"] == 3
    with pytest.raises(ValueError, match="needs the pixel size"):
        measure_grains(mask, min_grain="5um2")
    with pytest.raises(ValueError, match="min_grain must be"):
        measure_grains(mask, min_grain="lots")


def test_outputs_list_and_draw_what_was_left_out(tmp_path: Path, capsys) -> None:
    Image.fromarray(specks_and_border_mask() * 255).save(tmp_path / "mask.png")
    result = run_measure(tmp_path / "mask.png", out_dir=tmp_path / "out")
    assert "left out 6 objects: 5 smaller than 9 px, 1 touching the border" in capsys.readouterr().out
    assert len(read_csv(result.files["grains_csv"])) == 2
    left_out = read_csv(result.files["left_out_csv"])
    assert sorted(row["reason"] for row in left_out) == ["border"] + ["small"] * 5
    classes = read_csv(result.files["classes_csv"])
    assert (classes[0]["left_out_small"], classes[0]["left_out_border"]) == ("5", "1")
    outlined = np.asarray(Image.open(result.files["outlined_png"]).convert("RGB"))
    grey = np.all(np.abs(outlined.astype(int) - 128) <= 2, axis=-1)  # left-out outlines are drawn grey
    assert grey.sum() > 100


def test_measure_cli_takes_min_grain_and_keep_border(tmp_path: Path, capsys) -> None:
    from seglab.measure.cli import measure_main

    Image.fromarray(specks_and_border_mask() * 255).save(tmp_path / "mask.png")
    assert measure_main([f"mask={tmp_path / 'mask.png'}", f"out={tmp_path / 'a'}", "keep_border=true",
                         "min_grain=3"]) == 0
    out = capsys.readouterr().out
    assert "5 objects measured" in out and "left out 3 objects: 3 smaller than 3 px" in out
    assert "left-out table" in out


# --- which classes are background -------------------------------------------------------------------------------

def mineral_mask() -> np.ndarray:
    """A thin section labelled mineral by mineral: quartz (0) everywhere, a feldspar (1) and a biotite (2) grain."""
    mask = np.zeros((80, 80), dtype=np.uint8)
    mask[10:30, 10:30] = 1
    mask[40:70, 40:60] = 2
    return mask


def test_background_auto_measures_a_named_first_class_and_leaves_a_background_out() -> None:
    from seglab.measure.background import resolve_background

    minerals = ["quartz", "feldspar", "biotite"]
    ids, note = resolve_background("auto", minerals)
    assert ids == () and "'quartz' (class 0) included" in note and "background=quartz" in note
    table = measure_grains(mineral_mask(), class_names=minerals, background=ids, keep_border=True)
    by_class = {row["class_name"]: row for row in table.classes}
    assert by_class["quartz"]["count"] == 1  # the matrix of quartz around both grains: one object
    assert by_class["quartz"]["total_area_px"] == 80 * 80 - 400 - 600
    assert sum(row["area_fraction"] for row in table.classes) == pytest.approx(1.0)
    # class 0 named like a background, unnamed, generically named, or a binary task: class 0 is not measured
    for names in (["background", "feldspar", "biotite"], ["Matrix", "a", "b"], None, ["class0", "class1", "class2"],
                  ["sediment", "salt"]):
        ids, note = resolve_background("auto", names)
        assert ids == (0,) and "background, not measured" in note, names
    table = measure_grains(mineral_mask(), class_names=["background", "feldspar", "biotite"], background=(0,))
    assert [row["class_name"] for row in table.classes] == ["feldspar", "biotite"]


def test_background_by_id_or_name_and_clear_errors() -> None:
    from seglab.errors import ConfigError
    from seglab.measure.background import resolve_background

    minerals = ["quartz", "feldspar", "biotite", "pore"]
    assert resolve_background("quartz,Pore", minerals)[0] == (0, 3)
    assert resolve_background([1], minerals)[0] == (1,)
    assert resolve_background("none", ["background", "grain"])[0] == ()
    with pytest.raises(ConfigError, match="no class of that name; the class names are: quartz, feldspar"):
        resolve_background("epoxy", minerals)
    with pytest.raises(ConfigError, match="background=7: no such class"):
        resolve_background("7", minerals)


def test_ignored_pixels_never_join_a_measured_class_zero() -> None:
    mask = mineral_mask()
    mask[:, 75:] = 255  # an ignored strip along the right edge, touching the quartz
    table = measure_grains(mask, class_names=["quartz", "feldspar", "biotite"], background=(), ignore_index=255,
                           keep_border=True)
    quartz = next(row for row in table.classes if row["class_name"] == "quartz")
    assert quartz["total_area_px"] == 75 * 80 - 400 - 600


def test_measure_cli_measures_every_mineral_and_draws_class_zero_in_its_colour(tmp_path: Path, capsys) -> None:
    from seglab.measure.cli import measure_main
    from seglab.measure.plots import class_colour

    Image.fromarray(mineral_mask()).save(tmp_path / "mask.png")
    assert measure_main([f"mask={tmp_path / 'mask.png'}", f"out={tmp_path / 'a'}", "classes=[quartz,feldspar,biotite]",
                         "keep_border=true", "labels=false"]) == 0
    out = capsys.readouterr().out
    assert "every class is measured, 'quartz' (class 0) included" in out
    assert "3 objects measured (quartz 1, feldspar 1, biotite 1)" in out  # the classes' own words, not "grains"
    classes = read_csv(tmp_path / "a" / "classes.csv")
    assert [row["class_name"] for row in classes] == ["quartz", "feldspar", "biotite"]
    outlined = np.asarray(Image.open(tmp_path / "a" / "outlined.png").convert("RGB")).astype(int)
    cyan = np.array(class_colour(0)) * 255  # class 0's outline colour, not the white of "no grain"
    top_half = outlined[: outlined.shape[0] // 2]  # the quartz outline around the feldspar; the legend is lower right
    assert (np.abs(top_half - cyan).max(-1) <= 3).sum() > 50
    assert measure_main([f"mask={tmp_path / 'mask.png'}", f"out={tmp_path / 'b'}", "classes=[quartz,feldspar,biotite]",
                         "background=quartz", "keep_border=true"]) == 0
    assert "background, not measured: class 0 (quartz)" in capsys.readouterr().out
    assert [row["class_name"] for row in read_csv(tmp_path / "b" / "classes.csv")] == ["feldspar", "biotite"]
    assert measure_main([f"mask={tmp_path / 'mask.png'}", f"out={tmp_path / 'c'}", "classes=[quartz,feldspar,biotite]",
                         "background=[0, 2]", "keep_border=true"]) == 0  # a list, as YAML writes it
    assert [row["class_name"] for row in read_csv(tmp_path / "c" / "classes.csv")] == ["feldspar"]


def test_measure_names_a_class_it_did_not_find(tmp_path: Path, capsys) -> None:
    """A pore model that finds no pores says so, instead of a table that simply lacks them."""
    from seglab.measure.cli import measure_main

    mask = np.zeros((60, 60), np.uint8)
    mask[10:20, 10:20] = 2  # one crack-class object, no pore
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert measure_main([f"mask={tmp_path / 'mask.png'}", f"out={tmp_path / 'a'}", "classes=[matrix,pore,crack]"]) == 0
    out = capsys.readouterr().out
    assert "1 object measured (pore 0, crack 1)" in out and "note: no 'pore' found in mask.png" in out


def test_figures_use_the_runs_class_colours_when_they_show_on_an_image() -> None:
    """Outlines and histograms in the colours of legend.png and the overlays (pore red, crack blue), not tab10's;
    black, white and grey class colours, which vanish on micrographs, keep tab10's."""
    from seglab.measure.plots import class_colour

    run = {0: [0, 0, 0], 1: [255, 0, 0], 2: [0, 0, 255], 3: [200, 200, 200]}
    assert class_colour(1, run) == (1.0, 0.0, 0.0) and class_colour(2, run) == (0.0, 0.0, 1.0)
    assert class_colour(0, run) == class_colour(0) and class_colour(3, run) == class_colour(3)


def test_measure_mask_reads_the_class_table_beside_the_dataset(tmp_path: Path, capsys) -> None:
    """mask=data/masks/a.png names classes from data/classes.csv, as training does; classes= still overrides it."""
    from seglab.measure.cli import measure_main

    (tmp_path / "data" / "masks").mkdir(parents=True)
    mask = np.zeros((60, 60), np.uint8)
    mask[10:20, 10:20] = 2
    mask[30:45, 30:45] = 1
    Image.fromarray(mask).save(tmp_path / "data" / "masks" / "a.png")
    (tmp_path / "data" / "classes.csv").write_text("name,r,g,b\nmatrix,0,0,0\npore,255,0,0\ncrack,0,0,255\n")
    assert measure_main([f"mask={tmp_path / 'data' / 'masks' / 'a.png'}", f"out={tmp_path / 'a'}"]) == 0
    out = capsys.readouterr().out
    assert "class names from the class table in" in out and "2 objects measured (pore 1, crack 1)" in out
    assert [row["class_name"] for row in read_csv(tmp_path / "a" / "classes.csv")] == ["pore", "crack"]
    assert measure_main([f"mask={tmp_path / 'data' / 'masks' / 'a.png'}", f"out={tmp_path / 'b'}",
                         "classes=[background,void,fracture]"]) == 0
    assert "(void 1, fracture 1)" in capsys.readouterr().out
