"""Write docs/api.md, the API reference, from the public objects' numpydoc docstrings.

Run: ``python docs/build_api.py`` (``--check``: exit 1 if docs/api.md is not what it would write).
``tests/test_docs.py`` checks that the committed file is current and runs the docstrings' examples.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

#: module -> public names, in the order a reader meets them.
PUBLIC = {
    "latentode": ["LatentODERegressor", "InputError", "SolverError"],
    "latentode.datasets": None,  # its __all__
    "latentode.scoring": None,
    "latentode.baselines": None,
    "latentode.calibration": None,
    "latentode.evaluation": None,
    "latentode.plotting": None,
    "latentode.priors": ["NormalPrior", "CNFPrior", "make_prior"],
}
#: methods of the estimator, documented under it.
METHODS = ["fit", "predict", "impute", "sample", "score", "sample_prior", "save", "load"]


def names(module) -> list[str]:
    explicit = PUBLIC[module.__name__]
    if explicit is not None:
        return explicit
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(n for n, v in vars(module).items()
                  if not n.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v))
                  and getattr(v, "__module__", "") == module.__name__)


def signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "(no docstring)")


def entry(qualname: str, obj, level: int = 3) -> list[str]:
    kind = "class" if inspect.isclass(obj) else "function"
    lines = [f"{'#' * level} `{qualname}`", "", f"```python\n{kind} {qualname}{signature(obj)}\n```", "",
             "```text", doc(obj), "```", ""]
    return lines


def build() -> str:
    out = ["# API reference", "",
           "Generated from the docstrings by `python docs/build_api.py`; the examples in them run as tests "
           "(`tests/test_docs.py`).", ""]
    for modname in PUBLIC:
        module = importlib.import_module(modname)
        out += [f"## `{modname}`", ""]
        if module.__doc__:
            out += [inspect.cleandoc(module.__doc__).split("\n\n")[0], ""]
        for name in names(module):
            obj = getattr(module, name)
            out += entry(f"{modname}.{name}", obj)
            if obj.__name__ == "LatentODERegressor":
                for m in METHODS:
                    out += entry(f"LatentODERegressor.{m}", getattr(obj, m), level=4)
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    text = build()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/api.md is stale: run python docs/build_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
