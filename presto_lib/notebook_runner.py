"""Run a notebook with papermill, quietly and with visible progress: the command every notebook stage uses.

    python -m presto_lib.notebook_runner notebooks/03_base.ipynb data/executed/03_base.ipynb -p params_file params.yaml

What it changes against a plain `papermill IN OUT -k presto --cwd .`:

* **No kernel noise.** "Kernel is running over TCP without encryption" is ipykernel's warning for the TCP
  transport: the kernel talks over IPC sockets (a private folder) instead. "KeyboardInterrupt caught in kernel" is
  the kernel reporting the SIGINT that jupyter_client sends before every shutdown request, even to an idle kernel
  after the last cell: `QuietKernelManager` asks the finished kernel to shut down without that interrupt (a kernel
  that does not exit in time is still terminated, then killed).
* **Progress on stderr.** One line per code cell (index, elapsed time, the cell's first line) instead of
  papermill's bar, and every `tqdm.auto` bar in the kernel (training loops, sample generation) drawn as text on the
  terminal's stderr, not as a notebook widget or notebook output (`kernel_setup`, run at kernel start). JupyterLab
  kernels are untouched: there, with ipywidgets installed, tqdm renders as a widget.
* `--copy-to PATH` also writes a size-bounded copy of the executed notebook (`presto_lib.executed`: compressed
  figures, short OGG audio players), the one committed to the repository (results/notebooks/).
* A failing cell ends the run with exit status 1 and one line naming the cell and the error (the executed
  notebook, with the traceback, is still written).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from jupyter_client.manager import AsyncKernelManager

__all__ = ["QuietKernelManager", "kernel_setup", "run_notebook", "main"]

KERNEL = "presto"
IPC_MAX_PATH = 100          # Unix socket paths are limited to ~107 bytes


# ---- the kernel manager --------------------------------------------------------------------------

class QuietKernelManager(AsyncKernelManager):
    """A kernel manager that talks over IPC and shuts an idle kernel down without interrupting it first."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("transport", "ipc")
        super().__init__(**kwargs)

    async def _async_pre_start_kernel(self, **kw: Any):
        """IPC sockets (ip-<port>) and the connection file go into a fresh private folder, not the working dir."""
        if self.transport == "ipc" and not self.connection_file:
            self._folder = Path(tempfile.mkdtemp(prefix="pk-"))
            self.connection_file = str(self._folder / "kernel.json")
            self.ip = str(self._folder / "ipc")
            if len(self.ip) + 8 > IPC_MAX_PATH:            # an unusually long TMPDIR: TCP after all
                self.transport, self.ip = "tcp", "127.0.0.1"
        return await super()._async_pre_start_kernel(**kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        folder = getattr(self, "_folder", None)
        if folder is not None and not restart:
            shutil.rmtree(folder, ignore_errors=True)

    async def _async_interrupt_kernel(self) -> None:
        """Interrupt a running cell, but send no SIGINT as the first step of a shutdown."""
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


# ---- in the kernel ---------------------------------------------------------------------------------

def kernel_setup() -> None:
    """Run at kernel start: `tqdm.auto` bars become text bars on the terminal's stderr (not in the notebook)."""
    import tqdm.auto
    import tqdm.std

    class TerminalTqdm(tqdm.std.tqdm):
        """tqdm on the kernel process's own stderr (the terminal running the stage)."""

        def __init__(self, *args: Any, **kwargs: Any):
            kwargs.setdefault("file", sys.__stderr__)
            kwargs.setdefault("mininterval", 1.0)
            kwargs.setdefault("dynamic_ncols", True)
            super().__init__(*args, **kwargs)

    def trange(*args: Any, **kwargs: Any) -> TerminalTqdm:
        return TerminalTqdm(range(*args), **kwargs)

    tqdm.auto.tqdm, tqdm.auto.trange = TerminalTqdm, trange
    try:
        import tqdm.autonotebook

        tqdm.autonotebook.tqdm, tqdm.autonotebook.trange = TerminalTqdm, trange
    except ImportError:
        pass


KERNEL_ARGS = [
    "--IPKernelApp.capture_fd_output=False",     # the kernel's stderr stays the terminal's (tqdm above)
    "--IPKernelApp.exec_lines=import presto_lib.notebook_runner as _runner; _runner.kernel_setup(); del _runner",
]


# ---- progress lines --------------------------------------------------------------------------------

def _first_line(source: str, width: int = 70) -> str:
    """The first meaningful line of a cell (comment markers stripped), shortened."""
    for line in source.splitlines():
        s = line.strip().lstrip("#").strip()
        if s and not s.startswith("%%"):
            return s if len(s) <= width else s[: width - 3] + "..."
    return ""


def _engine(label: str) -> Any:
    """A papermill engine that prints one stderr line as each code cell starts."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
            t0, start = time.perf_counter(), nb_man.cell_start

            def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                if cell.cell_type == "code" and cell_index in code:
                    k, m = code.index(cell_index) + 1, int(time.perf_counter() - t0)
                    print(f"[{label}] cell {k}/{len(code)} ({m // 60}:{m % 60:02d}) {_first_line(cell.source)}",
                          file=sys.stderr, flush=True)
                return start(cell, cell_index, **kw)
            nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
    return ProgressEngine


# ---- running ---------------------------------------------------------------------------------------

def run_notebook(input_path: str | os.PathLike, output_path: str | os.PathLike,
                 parameters: Mapping[str, Any] | None = None, *, kernel_name: str = KERNEL,
                 cwd: str | os.PathLike = ".", log_output: bool = False, label: str | None = None) -> Any:
    """Execute a notebook with papermill, quiet kernel and stderr progress; returns the executed notebook."""
    import papermill as pm
    from papermill.engines import papermill_engines

    label = label or Path(input_path).stem
    papermill_engines.register("presto_progress", _engine(label))
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    return pm.execute_notebook(str(input_path), str(output_path), parameters=dict(parameters or {}),
                               kernel_name=kernel_name, cwd=str(cwd), engine_name="presto_progress",
                               progress_bar=False, log_output=log_output, request_save_on_cell_execute=True,
                               kernel_manager_class=QuietKernelManager, extra_arguments=list(KERNEL_ARGS))


def _value(text: str) -> Any:
    """A -p value as papermill's CLI reads it (YAML: numbers, booleans, lists; else the string)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m presto_lib.notebook_runner IN OUT [-p NAME VALUE]... [-k KERNEL] [--cwd DIR] [--log-output]
    [--copy-to PATH]."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.notebook_runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("-k", "--kernel", default=KERNEL)
    ap.add_argument("--cwd", default=".")
    ap.add_argument("--log-output", action="store_true", help="also echo every cell's output to stderr")
    ap.add_argument("--copy-to", default=None, metavar="PATH",
                    help="also write a size-bounded copy of the executed notebook there (presto_lib.executed)")
    a = ap.parse_args(argv)
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    label = Path(a.input).stem
    try:
        run_notebook(a.input, a.output, {k: _value(v) for k, v in a.parameters}, kernel_name=a.kernel, cwd=a.cwd,
                     log_output=a.log_output, label=label)
    except PapermillExecutionError as err:
        print(f"[{label}] FAILED in cell {err.exec_count}: {err.ename}: {err.evalue} (traceback in {a.output})",
              file=sys.stderr)
        return 1
    if a.copy_to:
        from presto_lib.executed import compact_file

        n = compact_file(a.output, a.copy_to)
        print(f"[{label}] copy for the repository: {a.copy_to} ({n / 2**20:.2f} MiB)", file=sys.stderr)
    m = int(time.perf_counter() - t0)
    print(f"[{label}] done in {m // 60}:{m % 60:02d} -> {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
