#!/bin/sh
# Install the Debian packages tenpak needs to build and test, if missing.
# As root it runs apt-get (update once, then install); otherwise it prints
# the command to run. Usage: scripts/deps.sh [EXTRA-PACKAGE...]
# Optional, for the reference scripts only (scripts/ref-quant.py; no test
# needs it): scripts/deps.sh python3-torch
set -eu

PACKAGES="gcc make cmake pkg-config git git-lfs ca-certificates
libgit2-dev libcurl4-openssl-dev libcjson-dev libzstd-dev libsodium-dev
librsvg2-bin $*"

missing=""
for pkg in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	case "$status" in
	*"install ok installed"*) ;;
	*) missing="$missing $pkg" ;;
	esac
done

# The S3 tests run s3rver from the npm registry. Any Node.js with npm will
# do (this machine kind may ship its own build), so look for the command.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "tenpak: missing Debian packages:$missing" >&2
	echo "tenpak: install them with: sudo apt-get install$missing" >&2
	exit 1
fi

echo "tenpak: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
