#!/bin/sh
# llama.cpp as a reference engine, through the npm package node-llama-cpp
# (pinned; it ships prebuilt CPU binaries, nothing is built or downloaded
# from GitHub), installed into .cache/ like scripts/s3rver.sh does s3rver.
#
#   scripts/llamacpp.sh install               install node-llama-cpp once
#   scripts/llamacpp.sh ppl MODEL.gguf TEXT CTX
#        perplexity of a byte-level model on TEXT, llama.cpp's convention
#        (see scripts/llamacpp-ppl.mjs); one JSON line on stdout
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
version=3.21.1
prefix="$root/.cache/node-llama-cpp"
pkg="$prefix/node_modules/node-llama-cpp/package.json"

install_llamacpp() {
	[ -f "$pkg" ] && grep -q "\"version\": \"$version\"" "$pkg" && return 0
	command -v npm >/dev/null || {
		echo "llamacpp.sh: npm is missing (Debian: apt-get install nodejs npm)" >&2
		exit 1
	}
	mkdir -p "$prefix"
	# A lock keeps parallel test scripts from installing twice at once.
	(
		flock 9
		[ -f "$pkg" ] && grep -q "\"version\": \"$version\"" "$pkg" ||
			npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
				"node-llama-cpp@$version" >&2
	) 9>"$prefix/.lock"
}

case ${1:-} in
install)
	install_llamacpp
	;;
ppl)
	[ $# -eq 4 ] || { echo "usage: llamacpp.sh ppl MODEL.gguf TEXT CTX" >&2; exit 2; }
	install_llamacpp
	exec node "$root/scripts/llamacpp-ppl.mjs" "$prefix" "$2" "$3" "$4"
	;;
*)
	echo "usage: llamacpp.sh install | ppl MODEL.gguf TEXT CTX" >&2
	exit 2
	;;
esac
