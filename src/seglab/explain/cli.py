"""``seglab explain``: Grad-CAM heatmaps of a checkpoint's predictions for an image or a folder of images.

Each run writes a new folder (``runs/explain``, ``runs/explain2``, ... also when ``out=`` names a folder that
holds files) unless ``exist_ok=true``. A folder or list source skips files that cannot be read (``on_error=skip``,
the default there) and lists them at the end; the last line says what was written where.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ..config import parse_key_values
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..data.formats import Sample
    from ..data.sources import BadFiles
    from .run import Explainer

# The option types the parser checks against ("class" is a keyword, hence the functional form).
ExplainOptions = TypedDict("ExplainOptions", {"weights": str, "source": str, "class": int | str, "layer": str,
                                              "sweep": bool, "layers": str, "out": str, "exist_ok": bool,
                                              "on_error": str, "device": str})
OPTIONS: ExplainOptions = {"weights": "", "source": "", "class": 1, "layer": "", "sweep": False, "layers": "",
                           "out": "runs/explain", "exist_ok": False, "on_error": "", "device": "auto"}
# What each option does, for ``seglab explain --help``.
OPTION_HELP = {
    "weights": "run folder or checkpoint to explain",
    "source": "an image, a folder, a list file, or views a.jpg,b.jpg of one sample",
    "class": "class to explain, by index or name (binary models: 1, the object)",
    "layer": "one layer to explain by its dotted name (default: the deepest encoder stage)",
    "sweep": "explain every encoder stage (or the layers= list) and write a grid",
    "layers": "layers of a sweep: comma-separated dotted names, or all_conv (every encoder convolution)",
    "out": "output folder (a new numbered one unless exist_ok=true)",
    "exist_ok": "write into out= even when it holds files",
    "on_error": "raise | skip: an unreadable file stops the run, or is skipped and listed (skip for folders)",
    "device": "auto | cpu | cuda",
}
# How each picture of ``Explainer.explain`` is counted in the closing line.
EXPLAIN_NOUNS = {"heatmap": "heatmap", "overlay": "overlay", "panel": "panel", "grid": "sweep grid"}


def explain_main(argv: list[str]) -> int:
    """``seglab explain weights=RUN source=IMAGE_OR_FOLDER [class=1 layer=NAME | sweep=true layers=all_conv]``."""
    from ..data.sources import BadFiles, check_on_error, default_on_error, model_source
    from ..runtime.run_dir import output_dir, saved_line
    from .run import Explainer

    opts = {**OPTIONS, **parse_key_values(argv, ExplainOptions)}
    if not opts["weights"] or not opts["source"]:
        raise ConfigError("explain needs weights=RUN_DIR and source=IMAGE_OR_FOLDER")
    check_on_error(str(opts["on_error"]))
    explainer = Explainer(str(opts["weights"]), str(opts["device"]))
    files = model_source(str(opts["source"]), explainer.meta, keep_unreadable=True)
    layer, layers = str(opts["layer"]) or None, str(opts["layers"]) or None
    explainer.class_index(opts["class"])  # a wrong class or layer stops here, before any folder is made
    explainer.layers(layer, bool(opts["sweep"]), layers)
    bad = BadFiles(str(opts["on_error"]) or default_on_error(str(opts["source"]), files))
    with output_dir(Path(opts["out"]), bool(opts["exist_ok"])) as out:
        written = _explain_all(explainer, files, out, opts, bad)
    print(saved_line(out, written, explainer.describe(), bad.note()))
    return 0


def _explain_all(explainer: Explainer, files: list[Sample], out: Path, opts: dict, bad: BadFiles) -> Counter:
    """Explain every sample into ``out``, skipping (or raising) bad files; the pictures written, by kind."""
    from ..errors import DataError
    from ..runtime.progress import track

    layer, layers = str(opts["layer"]) or None, str(opts["layers"]) or None
    written: Counter = Counter()
    for sample in track(files, desc="explain", unit="img"):
        with bad.guard(sample) as guard:
            result = explainer.explain(sample, opts["class"], layer=layer, sweep=bool(opts["sweep"]), layers=layers,
                                       out_dir=out)
        if guard.failed:
            continue
        for kind, value in result["files"].items():
            kinds = [kind] if isinstance(value, Path) else list(value)  # per layer: heatmap, overlay, panel
            written.update(EXPLAIN_NOUNS.get(k, k) for k in kinds)
        name = sample.id if sample.extra_views else sample.image.name
        print(f"{name}: class {result['class_index']} ({result['class_name']}) on "
              f"{result['class_pixels']} predicted pixels; layer(s) {', '.join(result['layers'])}")
        for note in result["notes"]:
            print(f"  note: {note}")
    bad.print()
    if files and len(bad) == len(files):
        raise DataError(f"none of the {len(files)} image(s) of {opts['source']} could be explained (reasons above)")
    return written
