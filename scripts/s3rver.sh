#!/bin/sh
# Start a local S3-compatible server (s3rver, from the npm registry) for
# tests and benchmarks, on 127.0.0.1 only.
#
#   scripts/s3rver.sh install            install s3rver into .cache/ once
#   scripts/s3rver.sh start DIR BUCKET [PORT]
#                                        start it (on PORT, else a free random
#                                        port); prints "PID PORT" when ready
#
# s3rver accepts the access key S3RVER with secret S3RVER.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
prefix="$root/.cache/s3rver"
bin="$prefix/node_modules/.bin/s3rver"

install_s3rver() {
	[ -x "$bin" ] && return 0
	command -v npm >/dev/null || {
		echo "s3rver.sh: npm is missing (Debian: apt-get install nodejs npm)" >&2
		exit 1
	}
	mkdir -p "$prefix"
	# A lock keeps parallel test scripts from installing twice at once.
	(
		flock 9
		[ -x "$bin" ] || npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
			s3rver@3 >&2
	) 9>"$prefix/.lock"
}

start() {
	dir=$1 bucket=$2 fixed_port=${3:-}
	install_s3rver
	mkdir -p "$dir"
	tries=0
	while [ "$tries" -lt 20 ]; do
		tries=$((tries + 1))
		# A random high port; a clash with another server just means retry.
		port=${fixed_port:-$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000))}
		log="$dir.log"
		rm -f "$log"
		"$bin" -d "$dir" -a 127.0.0.1 -p "$port" --configure-bucket "$bucket" \
			>"$log" 2>&1 &
		pid=$!
		waited=0
		while [ "$waited" -lt 100 ]; do
			if ! kill -0 "$pid" 2>/dev/null; then
				break
			fi
			if grep -q "listening on 127.0.0.1:$port" "$log" 2>/dev/null; then
				echo "$pid $port"
				return 0
			fi
			sleep 0.1
			waited=$((waited + 1))
		done
		kill "$pid" 2>/dev/null || true
	done
	echo "s3rver.sh: could not start s3rver (see $dir.log)" >&2
	exit 1
}

case "${1:-}" in
install) install_s3rver ;;
start)
	[ $# -eq 3 ] || [ $# -eq 4 ] || { echo "usage: $0 start DIR BUCKET [PORT]" >&2; exit 2; }
	shift
	start "$@"
	;;
*) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
