#!/usr/bin/env bash
# Make sure Mesa's EGL is present: MuJoCo renders the arm's and the quadruped's videos
# offscreen through it on machines without a GPU (the video tests).
set -euo pipefail
if dpkg -s libegl-mesa0 libgl1-mesa-dri >/dev/null 2>&1; then exit 0; fi
echo "installing Debian's Mesa EGL (offscreen rendering for the video tests)"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
