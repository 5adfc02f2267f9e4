#!/usr/bin/env bash
# Installs the Debian packages the pipeline needs, if missing: FluidSynth + a GM soundfont (corpus
# rendering), libsndfile (soundfile), chromium (listening-test page tests). Needs root or sudo.
set -u
need=()
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ldconfig -p 2>/dev/null | grep -q libsndfile || need+=(libsndfile1)
[ ${#need[@]} -eq 0 ] && { echo "system packages: all present"; exit 0; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "WARNING: missing system packages: ${need[*]}; not root and no sudo." >&2
    echo "         Install them yourself (apt-get install ${need[*]}). Corpus rendering falls back to the" >&2
    echo "         soundfont in the pretty_midi wheel only if FluidSynth exists; browser tests are skipped." >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "WARNING: no apt-get; please install: ${need[*]}" >&2; exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "WARNING: apt-get update failed" >&2
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || { echo "WARNING: could not install ${need[*]}; see apt-get output above" >&2; exit 0; }
echo "system packages installed"
