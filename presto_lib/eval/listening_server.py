"""The listening test's rating server: serves a kit's public files and saves validated ratings (paper sec. 4.5).

A tiny stdlib HTTP server bound to 127.0.0.1 only. It serves exactly the files under `<kit>/public/` (a
whitelist built at start-up: no directory listing, no path traversal, never the private `<kit>/key.csv`) and
two JSON endpoints:

    GET  /api/kit?rater=NAME   the kit for one rater: sets and clips in that rater's own shuffled order,
                               plus the sets this rater has already rated (so a rater can resume)
    POST /api/ratings          {"rater": NAME, "set": SET_ID, "ratings": [{"clip": ID, "rating": 0..100}, ...]}

A submission must rate every clip of its set exactly once with an integer in [0, 100]; unknown sets or clips,
extra fields, out-of-range or non-integer ratings are refused (400), a second submission of the same
(rater, set) is refused (409). Accepted rows are appended to the ratings CSV atomically: under an OS-level
lock (`fcntl.flock` on `<ratings>.lock`) the file is re-read, checked for duplicates, rewritten to an fsynced
temp file and renamed, so a refused or interrupted request never loses a row, and any number of server
processes may share one ratings file without losing an acknowledged row.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import mimetypes
import os
import random
import re
import tempfile
import threading
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

RATING_COLUMNS = ("rater", "set", "clip", "rating", "timestamp")
RATER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")   # always used with fullmatch
MAX_BODY = 64 * 1024
HOST = "127.0.0.1"


class SubmissionError(ValueError):
    """A refused submission, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- the kit as the server sees it (public part only) ----


def load_public_kit(kit_dir: str | os.PathLike) -> dict[str, Any]:
    """Read `<kit>/public/kit.json` and check its clip ids are unique and their audio exists."""
    public = Path(kit_dir) / "public"
    path = public / "kit.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: build a kit first (python -m presto_lib.stages.listening build)")
    kit = json.loads(path.read_text())
    seen: set[str] = set()
    for s in kit["sets"]:
        for c in s["clips"]:
            if c in seen:
                raise ValueError(f"{path}: clip id {c!r} appears twice")
            if not (public / "audio" / f"{c}.wav").is_file():
                raise ValueError(f"{path}: audio for clip {c!r} missing")
            seen.add(c)
    return kit


def rater_order(kit: dict[str, Any], rater: str) -> list[dict[str, Any]]:
    """The kit's sets, and the clips within each set, in one rater's own order (seeded by kit id + rater)."""
    def rng(*parts: str) -> random.Random:
        return random.Random(hashlib.sha256("\0".join(parts).encode()).hexdigest())
    sets = [dict(s, clips=list(s["clips"])) for s in kit["sets"]]
    rng(kit["kit_id"], rater).shuffle(sets)
    for s in sets:
        rng(kit["kit_id"], rater, s["set"]).shuffle(s["clips"])
    return sets


# ---- validation ----


def _valid_rating(value: Any) -> bool:
    """An integer in [0, 100] (a float only when integral); checked before any float maths (no OverflowError)."""
    if isinstance(value, bool):                              # bool is an int in Python; true/false is no rating
        return False
    if isinstance(value, int):
        return 0 <= value <= 100
    return isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0.0 <= value <= 100.0


def _short(value: Any) -> str:
    """repr of a refused value, cut to 40 characters."""
    r = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else f"an integer of {len(str(value))} digits"
    return r if len(r) <= 40 else r[:37] + "..."


def validate_submission(payload: Any, kit: dict[str, Any]) -> list[dict[str, Any]]:
    """Check one set's submission against the kit; return its CSV rows (without timestamp) or raise."""
    bad = lambda msg: SubmissionError(HTTPStatus.BAD_REQUEST, msg)
    if not isinstance(payload, dict) or set(payload) != {"rater", "set", "ratings"}:
        raise bad("submission must be an object with exactly the fields rater, set, ratings")
    rater, set_id, ratings = payload["rater"], payload["set"], payload["ratings"]
    if not isinstance(rater, str) or not RATER_RE.fullmatch(rater):
        raise bad("rater must be 1-40 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)")
    sets = {s["set"]: s for s in kit["sets"]}
    if not isinstance(set_id, str) or set_id not in sets:
        raise bad(f"unknown set {set_id!r}")
    if not isinstance(ratings, list):
        raise bad("ratings must be a list of {clip, rating}")
    want = set(sets[set_id]["clips"])
    rows, seen = [], set()
    for r in ratings:
        if not isinstance(r, dict) or set(r) != {"clip", "rating"}:
            raise bad("each rating must be an object with exactly the fields clip, rating")
        clip, value = r["clip"], r["rating"]
        if not isinstance(clip, str) or clip not in want:
            raise bad(f"clip {clip!r} is not in set {set_id}")
        if clip in seen:
            raise bad(f"clip {clip} rated twice")
        if not _valid_rating(value):
            raise bad(f"rating of clip {clip} must be an integer in [0, 100], got {_short(value)}")
        seen.add(clip)
        rows.append({"rater": rater, "set": set_id, "clip": clip, "rating": int(value)})
    if seen != want:
        raise bad(f"incomplete set {set_id}: {len(want - seen)} of {len(want)} clips unrated")
    return rows


# ---- storage ----


class RatingStore:
    """The ratings CSV: duplicate-checked, all-or-nothing appends (fsynced temp file + rename under flock)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock = threading.Lock()

    def rows(self) -> list[dict[str, str]]:
        """Every saved row (empty when the file does not exist yet)."""
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def done_sets(self, rater: str) -> list[str]:
        """The sets this rater has already submitted."""
        return sorted({r["set"] for r in self.rows() if r["rater"] == rater})

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Append one set's rows with a shared UTC timestamp; 409 if that (rater, set) is already saved."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the thread lock orders this process's threads; flock (on a side file: the ratings file itself is
        # replaced by rename) orders every process, so a read-check-rewrite never races another server's
        with self.lock, open(self.lock_path, "a") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            old = self.path.read_bytes() if self.path.exists() else b""
            keys = {(r["rater"], r["set"]) for r in rows}
            if keys & {(r["rater"], r["set"]) for r in self.rows()}:
                raise SubmissionError(HTTPStatus.CONFLICT, f"already rated: {sorted(keys)[0]}")
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=RATING_COLUMNS, lineterminator="\n")
            if not old:
                w.writeheader()
            w.writerows({**r, "timestamp": stamp} for r in rows)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(old + buf.getvalue().encode())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return len(rows)


def _fsync_dir(path: Path) -> None:
    """Make a rename inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- HTTP ----


def _public_files(kit_dir: Path) -> dict[str, Path]:
    """URL path -> file for every regular file under <kit>/public (the only files ever served)."""
    public = (kit_dir / "public").resolve()
    files = {"/" + p.relative_to(public).as_posix(): p for p in public.rglob("*") if p.is_file() and not p.is_symlink()}
    files["/"] = public / "index.html"
    return files


class _Handler(BaseHTTPRequestHandler):
    """Routes GET (whitelisted files, /api/kit) and POST /api/ratings."""

    server_version = "PrestoListening/1"
    kit: dict[str, Any]
    files: dict[str, Path]
    store: RatingStore

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise in tests
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; media-src 'self'")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/api/kit":
            rater = parse_qs(url.query).get("rater", [""])[0]
            if not RATER_RE.fullmatch(rater):
                return self._json(400, {"error": "rater must be 1-40 letters, digits, '_', '.', '-'"})
            sets = [{"set": s["set"], "caption": s["caption"],
                     "clips": [{"clip": c, "url": f"audio/{c}.wav"} for c in s["clips"]]}
                    for s in rater_order(self.kit, rater)]
            return self._json(200, {"title": self.kit.get("title", ""), "instructions": self.kit.get("instructions", ""),
                                    "sets": sets, "done": self.store.done_sets(rater)})
        f = self.files.get(unquote(url.path))
        if f is None or not f.is_file():
            return self._json(404, {"error": "not found"})
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        data = f.read_bytes()
        # single byte ranges, so that players can seek (Chromium asks for "bytes=0-" first)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if not m or not (m[1] or m[2]):
            return self._send(200, data, ctype, {"Accept-Ranges": "bytes"})
        start, end = (int(m[1]), int(m[2] or len(data) - 1)) if m[1] else (max(0, len(data) - int(m[2])), len(data) - 1)
        end = min(end, len(data) - 1)
        if start > end:
            return self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(data)}"})
        self._send(206, data[start:end + 1], ctype, {"Accept-Ranges": "bytes",
                                                     "Content-Range": f"bytes {start}-{end}/{len(data)}"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/api/ratings":
            return self._json(404, {"error": "not found"})
        # JSON content type forces a CORS preflight, which we never grant: other sites cannot post here
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(415, {"error": "Content-Type must be application/json"})
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._json(411, {"error": "Content-Length required"})
        if not 0 < n <= MAX_BODY:
            return self._json(413, {"error": f"body must be 1..{MAX_BODY} bytes"})
        try:  # NaN / Infinity are not JSON numbers; deep nesting raises RecursionError
            payload = json.loads(self.rfile.read(n), parse_constant=lambda c: {}[c])
        except (ValueError, KeyError, RecursionError):
            return self._json(400, {"error": "body is not valid JSON"})
        try:
            saved = self.store.append(validate_submission(payload, self.kit))
        except SubmissionError as e:
            return self._json(e.status, {"error": str(e)})
        self._json(200, {"saved": saved})


def make_server(kit_dir: str | os.PathLike, ratings: str | os.PathLike, port: int = 8000) -> ThreadingHTTPServer:
    """A rating server for `kit_dir` bound to 127.0.0.1:`port` (0 = any free port); call serve_forever()."""
    kit_dir = Path(kit_dir)
    ratings = Path(ratings).resolve()
    public = (kit_dir / "public").resolve()
    if public in ratings.parents:
        raise ValueError(f"ratings file {ratings} must not be inside the served folder {public}")
    handler = type("Handler", (_Handler,), {"kit": load_public_kit(kit_dir), "files": _public_files(kit_dir),
                                            "store": RatingStore(ratings)})
    return ThreadingHTTPServer((HOST, port), handler)


def serve(kit_dir: str | os.PathLike, ratings: str | os.PathLike, port: int = 8000) -> None:
    """Run the rating server until Ctrl-C."""
    httpd = make_server(kit_dir, ratings, port)
    print(f"listening test: http://{HOST}:{httpd.server_address[1]}/  (ratings -> {ratings}; Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
