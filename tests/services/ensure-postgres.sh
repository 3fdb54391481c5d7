#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries are present (the study tests start a private
# server on loopback from them). Installs the package when missing.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
echo "installing Debian's postgresql (server binaries for the study tests)"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
