"""``seglab explain``: Grad-CAM heatmaps of a checkpoint's predictions for an image or a folder of images."""
from __future__ import annotations

from typing import TypedDict

from ..config import parse_key_values
from ..errors import ConfigError

# The option types the parser checks against ("class" is a keyword, hence the functional form).
ExplainOptions = TypedDict("ExplainOptions", {"weights": str, "source": str, "class": int | str, "layer": str,
                                              "sweep": bool, "layers": str, "out": str, "device": str})
OPTIONS: ExplainOptions = {"weights": "", "source": "", "class": 1, "layer": "", "sweep": False, "layers": "",
                           "out": "runs/explain", "device": "auto"}


def explain_main(argv: list[str]) -> int:
    """``seglab explain weights=RUN source=IMAGE_OR_FOLDER [class=1 layer=NAME | sweep=true layers=all_conv]``."""
    from ..data.sources import model_source
    from .run import Explainer

    opts = {**OPTIONS, **parse_key_values(argv, ExplainOptions)}
    if not opts["weights"] or not opts["source"]:
        raise ConfigError("explain needs weights=RUN_DIR and source=IMAGE_OR_FOLDER")
    explainer = Explainer(str(opts["weights"]), str(opts["device"]))
    files = model_source(str(opts["source"]), explainer.meta)
    for sample in files:
        result = explainer.explain(sample, opts["class"], layer=str(opts["layer"]) or None, sweep=bool(opts["sweep"]),
                                   layers=str(opts["layers"]) or None, out_dir=opts["out"])
        name = sample.id if sample.extra_views else sample.image.name
        print(f"{name}: class {result['class_index']} ({result['class_name']}) on "
              f"{result['class_pixels']} predicted pixels; layer(s) {', '.join(result['layers'])}")
        for note in result["notes"]:
            print(f"  note: {note}")
    print(f"Grad-CAM of {len(files)} image(s) written to {opts['out']}")
    return 0
