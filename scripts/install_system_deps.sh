#!/usr/bin/env bash
# Installs the Debian packages tfaural needs: FluidSynth + the General MIDI soundfont (demo catalogue
# and model signals), ffmpeg (test fixtures in formats libsndfile cannot write), and Chromium with
# its driver (the listening report's browser test). Skips what is already installed.
set -euo pipefail
packages=(fluidsynth fluid-soundfont-gm chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
