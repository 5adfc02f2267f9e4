"""The notebook runner: parameters injected, progress on stderr, no kernel noise, no SIGINT at shutdown."""
import os
import subprocess
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import find_kernel_specs


if "presto" not in find_kernel_specs():
    pytest.skip("the 'presto' kernel is not installed (make setup)", allow_module_level=True)

# Cell 2 makes the kernel's SIGINT handler (restored after every cell by ipykernel) write a flag file, so the
# test sees whether the kernel got a SIGINT when it was shut down after the last cell.
FLAG_CELL = """import signal
def _flag(*a):
    open(flag_file, "w").write("SIGINT")
get_ipython().kernel.saved_sigint_handler = _flag"""
TQDM_CELL = """from tqdm.auto import tqdm
for i in tqdm(range(3), desc="train-bar"):
    pass
print("steps", n_steps)"""


def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('flag_file = "x"\nn_steps = 1', metadata={"tags": ["parameters"]}),
                *[nbformat.v4.new_code_cell(c) for c in cells]]
    nb.metadata["kernelspec"] = {"name": "presto", "display_name": "Python (presto)", "language": "python"}
    nbformat.write(nb, path)
    return path


def _run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "presto_lib.notebook_runner", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_runner_is_quiet_shows_progress_and_sends_no_sigint(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", FLAG_CELL, TQDM_CELL)
    r = _run(nb, tmp_path / "out" / "nb.ipynb", "-p", "flag_file", tmp_path / "flag", "-p", "n_steps", 7, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr and "KeyboardInterrupt" not in r.stderr
    assert "[nb] cell 1/4" in r.stderr and "[nb] cell 4/4" in r.stderr and "[nb] done" in r.stderr
    assert "train-bar: 100%" in r.stderr                      # the kernel's tqdm bar on the terminal ...
    out = nbformat.read(tmp_path / "out" / "nb.ipynb", 4)
    texts = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "steps 7" in texts and "train-bar" not in texts   # ... not in the notebook
    assert not (tmp_path / "flag").exists()                    # shut down without an interrupt
    assert not list(tmp_path.glob("kernel-*"))                 # no IPC socket files in the working dir


def test_plain_papermill_interrupts_the_kernel_at_shutdown(tmp_path):
    """The control: what the runner removes really happens with papermill's default kernel manager."""
    import papermill as pm

    nb = _notebook(tmp_path / "nb.ipynb", FLAG_CELL)
    pm.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), parameters={"flag_file": str(tmp_path / "flag")},
                        kernel_name="presto", progress_bar=False, cwd=str(tmp_path))
    assert (tmp_path / "flag").read_text() == "SIGINT"


def test_a_failing_cell_is_one_clear_line_and_exit_1(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", "raise ValueError('no data/base/model: run dvc repro base')")
    r = _run(nb, tmp_path / "out.ipynb", cwd=tmp_path)
    assert r.returncode == 1
    assert "FAILED in cell" in r.stderr and "ValueError: no data/base/model: run dvc repro base" in r.stderr
    assert "Traceback" not in r.stderr and (tmp_path / "out.ipynb").is_file()
