"""The package imports cheaply and never reaches for the network."""
import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_import_sets_hub_offline_and_stays_light():
    r = _run("""
        import os, sys
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.pop(k, None)
        import presto_lib
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        heavy = [m for m in ("torch", "transformers", "librosa", "music21") if m in sys.modules]
        assert not heavy, f"import presto_lib pulled in {heavy}"
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_every_module_imports_without_network():
    """Import every presto_lib module with socket connections forbidden."""
    r = _run("""
        import importlib, pkgutil, socket
        def refuse(*a, **k):
            raise RuntimeError(f"network access attempted: {a}")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import presto_lib
        bad = []
        for m in pkgutil.walk_packages(presto_lib.__path__, "presto_lib."):
            try:
                importlib.import_module(m.name)
            except Exception as e:
                bad.append(f"{m.name}: {type(e).__name__}: {e}")
        assert not bad, "\\n".join(bad)
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
