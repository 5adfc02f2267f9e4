"""Load k-diffusion's `sampling.py` as an independent reference, without importing the package.

`import k_diffusion` pulls torchvision (not installed here), so this registers a stub package `k_diffusion`
whose `utils` module holds the one helper `sampling.py` uses (`append_dims`), then executes the real
`k_diffusion/sampling.py` file from the installed wheel (k-diffusion==0.1.1.post1, see requirements-nodeps.txt).
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


def _package_dir() -> Path:
    spec = importlib.util.find_spec("k_diffusion")     # locates the package without executing __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1")
    return Path(list(spec.submodule_search_locations)[0])


def load_sampling() -> types.ModuleType:
    """The k_diffusion.sampling module, loaded by file path under a stub package."""
    name = "_kdiff_ref"
    if f"{name}.sampling" in sys.modules:
        return sys.modules[f"{name}.sampling"]
    pkg_dir = _package_dir()
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(pkg_dir)]
    utils = types.ModuleType(f"{name}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]   # the stub of k_diffusion.utils
    pkg.utils = utils
    sys.modules[name], sys.modules[f"{name}.utils"] = pkg, utils
    spec = importlib.util.spec_from_file_location(f"{name}.sampling", pkg_dir / "sampling.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
