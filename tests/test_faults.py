"""Fault injection: hostile captions CSVs and audio, two rating servers on one file (training states:
test_faults_checkpoint.py).

Each case is a probe that once failed (path traversal, overwritten clips, unvalidated BPM, lost ratings); the
assertions check the outcome on disk, not just that an error was raised.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from presto_lib.audio import load_audio
from presto_lib.data.corpus import prepare_clip
from presto_lib.data import folder
from presto_lib.data.folder import import_audio_folder
from presto_lib.eval.listening_server import SubmissionError, validate_submission

torch.set_num_threads(1)
SR = 8000
ROOT = Path(__file__).resolve().parents[1]


# ---- audio folder import ----


def _params():
    return {"common": {"sample_rate": SR, "clip_seconds": 1.0, "seed": 0},
            "corpus": {"splits": {"valid": 0.0, "test": 0.0}, "silence_db": -60.0, "target_lufs": -20.0}}


def _tone(path, hz, seconds=2.0, sr=SR, amp=0.3, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * hz * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x] * channels, 1), sr)


def _peak_hz(wav):
    spec = np.abs(np.fft.rfft(wav))
    return np.argmax(spec) * SR / len(wav)


def _files(root):
    return {p for p in Path(root).rglob("*") if p.is_file()}


def _write_csv(path, text):
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def test_import_never_writes_outside_out_nor_overwrites_a_clip(tmp_path):
    audio = tmp_path / "sandbox" / "audio"
    freqs = {"a b.wav": 300, "a_b.wav": 500, "dup.wav": 700, "dup.flac": 900, "sub/x.wav": 1100}
    for name, hz in freqs.items():
        _tone(audio / name, hz)
    (audio / "same.wav").write_bytes((audio / "a b.wav").read_bytes())      # same content, other name
    _tone(tmp_path / "outside.wav", 1300)
    _write_csv(tmp_path / "c.csv", "path,caption,bpm,piece_id\n"
               + "".join(f"{n},tone {hz},100,\n" for n, hz in freqs.items())
               + "same.wav,copy,100,\n"
               + "dup.wav,escape,100,../../../escaped_pid\n"               # line 8
               + "../../outside.wav,outside,100,\n"                         # line 9
               + "dup.flac,win,100,..\\\\evil\n"                            # line 10
               + "a_b.wav,odd id,100,my piece!\n")                          # line 11: sanitised, same audio
    out = tmp_path / "sandbox" / "out"
    before = _files(tmp_path)
    with pytest.raises(ValueError, match=r"c\.csv, line 8: piece_id '\.\./\.\./\.\./escaped_pid' has path parts"):
        import_audio_folder(audio, tmp_path / "c.csv", out, _params(), progress=False)
    assert _files(tmp_path) == before
    m = import_audio_folder(audio, tmp_path / "c.csv", out, _params(), on_error="skip", progress=False)
    new = _files(tmp_path) - before
    assert new and all(out in p.parents for p in new), "a file was written outside --out"
    assert not list(tmp_path.rglob("*escaped_pid*"))
    df, skipped = pd.read_csv(m), pd.read_csv(out / "skipped.csv")
    wavs = {p.relative_to(out).as_posix() for p in (out / "audio").rglob("*.wav")}
    assert len(df) == len(set(df.path)) == len(wavs) and set(df.path) == wavs, "two rows share a clip file"
    for _, r in df.iterrows():           # each clip still holds its own file's tone: nothing was overwritten
        src = r.source.removeprefix("audio:")
        assert abs(_peak_hz(load_audio(out / r.path)[0][0]) - freqs[src]) < 5, (r.path, src)
    assert df.groupby("source").size().to_dict() == {f"audio:{n}": 2 for n in freqs}
    reasons = dict(zip(skipped.line, skipped.reason))
    assert set(reasons) == {7, 8, 9, 10, 11}
    assert "same audio content as line 2" in reasons[7] and "same audio content as line 3" in reasons[11]
    assert "path parts" in reasons[8] and "path parts" in reasons[10] and "leaves the audio folder" in reasons[9]


BAD_ROWS = {  # line -> (csv row, expected reason)
    3: ("t.wav,zero,0", "bpm '0' is outside 20-400"),
    4: ("t.wav,negative,-5", "bpm '-5' is outside"),
    5: ("t.wav,nan,nan", "bpm 'nan' is outside"),
    6: ("t.wav,inf,inf", "bpm 'inf' is outside"),
    7: ("t.wav,huge,1e9", "bpm '1e9' is outside"),
    8: ("t.wav,word,abc", "bpm 'abc' is not a number"),
    9: ("silent.wav,silent,100", "silent"),
    10: ("short.wav,short,100", "too short"),
    11: ("t.wav,extra,120,x", "4 fields, the header has 3"),
    12: ("missing.wav,gone,100", "audio file not found"),
    13: ("t.wav,,100", "caption is empty"),
    14: (b"t.wav,caf\xe9,100", "field 'caption' is not valid utf-8"),
    15: ("junk.wav,junk,100", "cannot read audio file"),
}


def _bad_folder(tmp_path):
    audio = tmp_path / "audio"
    _tone(audio / "t.wav", 440)
    sf.write(audio / "silent.wav", np.zeros(2 * SR), SR)
    _tone(audio / "short.wav", 440, seconds=0.1)
    (audio / "junk.wav").write_bytes(b"RIFF....WAVEjunk")
    body = b"path,caption,bpm\nt.wav,good,120\n" + b"".join(
        (r if isinstance(r, bytes) else r.encode()) + b"\n" for _, (r, _) in sorted(BAD_ROWS.items()))
    _write_csv(tmp_path / "c.csv", body)
    return audio


def test_every_bad_row_lands_in_skipped_csv(tmp_path):
    audio = _bad_folder(tmp_path)
    m = import_audio_folder(audio, tmp_path / "c.csv", tmp_path / "out", _params(), on_error="skip", progress=False)
    df, skipped = pd.read_csv(m), pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert df.caption.unique().tolist() == ["good"] and (df.bpm == 120).all()
    got = dict(zip(skipped.line, skipped.reason))
    assert set(got) == set(BAD_ROWS), sorted(got)
    for line, (_, why) in BAD_ROWS.items():
        assert why in got[line], (line, got[line])


@pytest.mark.parametrize("line", [5, 8, 11, 14, 15])
def test_bad_row_error_names_file_line_and_field(tmp_path, line):
    audio = _bad_folder(tmp_path)
    rows = (tmp_path / "c.csv").read_bytes().split(b"\n")
    _write_csv(tmp_path / "one.csv", b"\n".join(rows[:2] + [rows[line - 1]]) + b"\n")   # the bad row is line 3
    why = BAD_ROWS[line][1]
    with pytest.raises(ValueError, match=rf"one\.csv, line 3: .*{why.split(' is ')[0][:12]}"):
        import_audio_folder(audio, tmp_path / "one.csv", tmp_path / "out", _params(), progress=False)
    assert not (tmp_path / "out" / "manifest.csv").exists() and not (tmp_path / "out" / "audio.partial").exists()


def test_declared_encoding_reads_latin1_captions(tmp_path):
    _tone(tmp_path / "audio" / "t.wav", 440)
    _write_csv(tmp_path / "c.csv", "path,caption,bpm\nt.wav,café crème,90\n".encode("latin-1"))
    m = import_audio_folder(tmp_path / "audio", tmp_path / "c.csv", tmp_path / "out", _params(),
                            encoding="latin-1", progress=False)
    assert pd.read_csv(m).caption.unique().tolist() == ["café crème"]
    _write_csv(tmp_path / "q.csv", b'path,caption\nt.wav,"unterminated\n')
    with pytest.raises(ValueError, match=r"q\.csv, line \d: malformed CSV"):
        import_audio_folder(tmp_path / "audio", tmp_path / "q.csv", tmp_path / "out2", _params(), progress=False)


def _import_peak(tmp_path, seconds, sr_in=44100):
    """(manifest, peak traced bytes, decoded stereo float32 bytes) importing one `seconds`-long stereo file."""
    t = np.arange(int(seconds * sr_in)) / sr_in
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)
    (tmp_path / "audio").mkdir(parents=True)
    sf.write(tmp_path / "audio" / "long.wav", np.stack([x, 0.5 * x], 1), sr_in)
    full_bytes = x.nbytes * 2
    del t, x
    _write_csv(tmp_path / "c.csv", "path,caption,bpm\nlong.wav,long,100\n")
    tracemalloc.start()
    try:
        m = import_audio_folder(tmp_path / "audio", tmp_path / "c.csv", tmp_path / "out", _params(), progress=False)
        return m, tracemalloc.get_traced_memory()[1], full_bytes
    finally:
        tracemalloc.stop()


def test_long_file_is_streamed_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "BLOCK_FRAMES", 1 << 14)
    _, peak_short, _ = _import_peak(tmp_path / "short", 8.0)
    m, peak, full_bytes = _import_peak(tmp_path / "long", 48.0)
    # six times the audio, (nearly) the same peak memory, far below the decoded file
    assert peak < 1.25 * peak_short + 2**19 and peak < full_bytes / 8, (peak_short, peak, full_bytes)
    df = pd.read_csv(m)
    assert len(df) == 48
    ref = load_audio(m.parent / ".." / "audio" / "long.wav", SR)[0][0]   # whole-file reference (downmix + soxr)
    for j in (0, 17, 47):
        want = prepare_clip(ref[j * SR:(j + 1) * SR], SR, _params()["corpus"])[0][0]
        got = load_audio(m.parent / df.path[j])[0][0]
        assert np.abs(got - want).max() < 2e-3, j


# ---- listening server ----


def _mini_kit(root, n_sets=6, n_clips=3):
    pub = root / "public"
    (pub / "audio").mkdir(parents=True)
    (pub / "index.html").write_text("<html></html>")
    sets = [{"set": f"set{i}", "caption": f"c{i}", "clips": [f"s{i}c{j}" for j in range(n_clips)]}
            for i in range(n_sets)]
    for s in sets:
        for c in s["clips"]:
            sf.write(pub / "audio" / f"{c}.wav", np.zeros(80), SR)
    kit = {"kit_id": "k", "title": "t", "instructions": "", "sets": sets}
    (pub / "kit.json").write_text(json.dumps(kit))
    return kit


def _post(port, body, timeout=20):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/ratings", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_rater_id_and_rating_validation(tmp_path):
    kit = _mini_kit(tmp_path)
    ok = {"rater": "alice", "set": "set0", "ratings": [{"clip": c, "rating": 50} for c in kit["sets"][0]["clips"]]}
    assert len(validate_submission(ok, kit)) == 3
    for rater in ("alice\n", "alice\r\n", "\nalice", "al ice", "a" * 41):
        with pytest.raises(SubmissionError, match="rater must be"):
            validate_submission({**ok, "rater": rater}, kit)
    for value in (10 ** 400, -(10 ** 400), 1e300, 100.5, True, "50", None, 101):
        bad = {**ok, "ratings": ok["ratings"][:-1] + [{"clip": ok["ratings"][-1]["clip"], "rating": value}]}
        with pytest.raises(SubmissionError, match="must be an integer in") as e:
            validate_submission(bad, kit)
        assert e.value.status == 400 and len(str(e.value)) < 200
    assert validate_submission({**ok, "ratings": [{**r, "rating": 100.0} for r in ok["ratings"]]}, kit)[0]["rating"] == 100


SERVER = textwrap.dedent("""
    import sys
    from presto_lib.eval.listening_server import make_server
    httpd = make_server(sys.argv[1], sys.argv[2], port=0)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()
""")


def test_two_server_processes_lose_no_rating(tmp_path):
    kit = _mini_kit(tmp_path / "kit", n_sets=6)
    ratings = tmp_path / "ratings.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path / "kit"), str(ratings)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        # 80 distinct (rater, set) submissions, alternating between the servers, plus 40 repeats sent to the
        # other server: every one of the 80 must land exactly once, every repeat must be refused (409)
        jobs = [{"rater": f"r{i}", "set": s["set"], "ratings": [{"clip": c, "rating": (i * 7 + k) % 101}
                                                                  for k, c in enumerate(s["clips"])]}
                for i in range(14) for s in kit["sets"]][:80]
        work = [(ports[n % 2], j) for n, j in enumerate(jobs)] + [(ports[(n + 1) % 2], j)
                                                                   for n, j in enumerate(jobs[::2])]
        codes, lock = {}, threading.Lock()

        def worker(k):
            for n in range(k, len(work), 8):
                port, job = work[n]
                c = _post(port, job)
                with lock:
                    codes.setdefault((job["rater"], job["set"]), []).append(c)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        [t.start() for t in threads]
        [t.join(timeout=120) for t in threads]
        assert not any(t.is_alive() for t in threads)
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
            p.stdout.close()
    assert all(sorted(c) in ([200], [200, 409]) for c in codes.values()), codes
    assert len(codes) == 80
    df = pd.read_csv(ratings)
    assert len(df) == 80 * 3 and not df.duplicated(["rater", "clip"]).any()
    landed = set(zip(df["rater"], df["set"]))
    assert landed == set(codes), "an acknowledged submission is missing from ratings.csv"
    want = {(j["rater"], r["clip"]): r["rating"] for j in jobs for r in j["ratings"]}
    assert dict(zip(zip(df["rater"], df["clip"]), df["rating"])) == want
