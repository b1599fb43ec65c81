#!/usr/bin/env bash
# Cost of tenpak's pointer index (lineage/index.c): how long the first scan
# of a repository's history takes, and a later one that reads the cache in
# <git-common-dir>/tenpak/pointer-index plus only the new commits.
#
#   scripts/bench-lineage.sh [COMMITS...]      (default: 1000)
#
# For each COMMITS it generates a repository (git fast-import) of COMMITS
# commits, each changing one of FILES (default 4) LFS pointer files to a new
# pointer (made-up oids: no LFS content is needed to index pointers), then
# times `tenpak lineage --json`, which builds the index before it looks at
# the model files at HEAD:
#   first scan    no cache: every commit is read
#   cached        the cache and nothing new
#   +NEW commits  the cache, then NEW (default 10) new commits
# "index ms" is the index build alone, from TENPAK_TRACE's "lineage index"
# line; "wall ms" is the whole command. Each is the best of RUNS (default 5).
# Binaries: TENPAK (default build/tenpak). OLD_TENPAK, if set, adds a row
# for that binary (e.g. one built before the index, which read only HEAD and
# branch tips).
set -euo pipefail

cd "$(dirname "$0")/.."
TENPAK=$(realpath "${TENPAK:-build/tenpak}")
FILES=${FILES:-4}
NEW=${NEW:-10}
RUNS=${RUNS:-5}
[ $# -gt 0 ] || set -- 1000
[ -x "$TENPAK" ] || { echo "missing $TENPAK: build first (cmake --build build)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-lineage.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export HOME="$WORK/home" GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
unset GIT_DIR GIT_WORK_TREE TENPAK_TRACE

# stream FROM TO [PARENT]: fast-import commands for commits FROM..TO on main,
# commit k pointing models/m<k % FILES>/model.safetensors at a new oid.
stream() {
	awk -v from="$1" -v to="$2" -v files="$FILES" -v parent="${3:-}" 'BEGIN {
		for (k = from; k <= to; k++) {
			h = sprintf("%08x", k); oid = h h h h h h h h
			ptr = sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", oid, 1000000 + k)
			msg = sprintf("checkpoint %d\n", k)
			printf "blob\nmark :1\ndata %d\n%s\n", length(ptr), ptr
			printf "commit refs/heads/main\ncommitter bench <bench@tenpak.invalid> %d +0000\n", 1700000000 + k
			printf "data %d\n%s", length(msg), msg
			if (k == from && parent != "") printf "from %s\n", parent
			if (k == 1) {
				attr = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
				printf "M 100644 inline .gitattributes\ndata %d\n%s", length(attr), attr
			}
			printf "M 100644 :1 models/m%d/model.safetensors\n\n", k % files
		}
	}'
}

# now_ms: monotonic enough for a benchmark.
now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# run BIN: "index_ms wall_ms" of one `BIN lineage --json` in the repository.
run() {
	local t0 t1 idx
	t0=$(now_ms)
	TENPAK_TRACE=1 "$1" lineage --json >/dev/null 2>"$WORK/trace"
	t1=$(now_ms)
	idx=$(sed -n 's/.*lineage index: .*; \([0-9.]*\) ms$/\1/p' "$WORK/trace" | tail -1)
	echo "${idx:--} $((t1 - t0))"
}

# best BIN PREPARE: the best of RUNS runs, PREPARE (a shell command) before each.
best() {
	local b_idx=- b_wall=999999 idx wall
	for _ in $(seq 1 "$RUNS"); do
		eval "$2"
		read -r idx wall < <(run "$1")
		if [ "$wall" -lt "$b_wall" ]; then b_wall=$wall; b_idx=$idx; fi
	done
	echo "$b_idx $b_wall"
}

scanned() {
	sed -n 's/.*(\([0-9]*\) cached, \([0-9]*\) scanned).*/\2/p' "$WORK/trace" | tail -1
}

cache_size() {
	local f=.git/tenpak/pointer-index
	[ -f "$f" ] && wc -c <"$f" | tr -d ' ' || echo -
}

echo "| commits | case | commits read | index ms | wall ms | cache bytes |"
echo "|---|---|---|---|---|---|"
for n in "$@"; do
	repo="$WORK/repo-$n"
	git init -q "$repo"
	cd "$repo"
	stream 1 "$n" | git fast-import --quiet
	git symbolic-ref HEAD refs/heads/main
	if [ -n "${OLD_TENPAK:-}" ]; then
		read -r idx wall < <(best "$(realpath "$OLD_TENPAK")" ":")
		echo "| $n | old binary (HEAD and branch tips only) | - | - | $wall | - |"
	fi
	read -r idx wall < <(best "$TENPAK" "rm -rf .git/tenpak")
	echo "| $n | first scan | $(scanned) | $idx | $wall | $(cache_size) |"
	read -r idx wall < <(best "$TENPAK" ":")
	echo "| $n | cached | $(scanned) | $idx | $wall | $(cache_size) |"
	# Each run adds NEW commits on top of the cache of the one before.
	read -r idx wall < <(best "$TENPAK" \
		'top=$(git rev-parse main); c=$(git rev-list --count main); stream $((c + 1)) $((c + NEW)) "$top" | git fast-import --quiet --force')
	echo "| $n | +$NEW commits | $(scanned) | $idx | $wall | $(cache_size) |"
	cd "$WORK"
done
