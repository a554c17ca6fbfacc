#!/usr/bin/env bash
# Installs the system packages brainharmonic-rt needs: a JACK server (MIDI ports without a sound card),
# FluidSynth with General MIDI SoundFonts (the live synth and WAV rendering: FluidR3_GM, the better one,
# and the small TimGM6mb), mosquitto (MQTT control plane), Chromium and its WebDriver (the web page's tests
# drive a real headless browser) and Python's venv module. Debian/Ubuntu as root: installs them.
# Elsewhere: says what to install.
set -euo pipefail

PKGS=(jackd2 fluidsynth fluid-soundfont-gm timgm6mb-soundfont mosquitto mosquitto-clients chromium chromium-driver python3-venv)

have_all() {
    command -v jackd >/dev/null && command -v fluidsynth >/dev/null && command -v mosquitto >/dev/null \
        && command -v chromium >/dev/null && command -v chromedriver >/dev/null \
        && [ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]
}

if have_all; then
    echo "system packages: jackd, fluidsynth, FluidR3_GM, TimGM6mb, mosquitto, chromium, chromedriver already present"
    exit 0
fi

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "system packages: installing ${PKGS[*]}"
    apt-get update -qq
    # python3-venv only matters for the system Python; ignore it where the distribution has no such package.
    apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null \
        || apt-get install -y -qq --no-install-recommends "${PKGS[@]:0:8}" >/dev/null
    have_all && exit 0
    echo "system packages: apt-get finished but something is still missing (jackd, fluidsynth, mosquitto, chromium," \
        "chromedriver, FluidR3_GM or TimGM6mb)." >&2
    exit 1
fi

cat >&2 <<'MSG'
brainharmonic-rt needs these system packages, which this script installs only on Debian/Ubuntu as root:
  Debian/Ubuntu: sudo apt-get install jackd2 fluidsynth fluid-soundfont-gm timgm6mb-soundfont mosquitto \
                 mosquitto-clients chromium chromium-driver python3-venv
  Fedora:        sudo dnf install jack-audio-connection-kit fluidsynth fluid-soundfont-gm mosquitto chromium \
                 chromedriver
  macOS:         brew install jack fluid-synth mosquitto chromedriver   (CoreMIDI replaces JACK for MIDI ports; CoreAudio plays)
(Chromium and its driver are needed only by the web page's tests.)
Then run this command again, or point --soundfont / BRAINHARMONIC_OUTPUT__SOUNDFONT at a GM .sf2 file.
MSG
exit 1
