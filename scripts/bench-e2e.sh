#!/bin/sh
# End-to-end benchmark: git push of a base model, then of a fine-tune of it
# at the same path, then a fresh git clone, through
#   - stock git-lfs to a file:// remote (git-lfs's built-in transfer),
#   - tenpak with a local directory store, the build before (BEFORE) and
#     this build (after),
#   - tenpak with an S3 store (s3rver on 127.0.0.1), after only, when
#     BENCH_S3=1.
# Next to each tenpak row, the codec alone on the same pair, in the same
# run: `tenpak delta compress` of the fine-tune against the base (what a
# push of it must at least cost) and `tenpak delta apply` of the base's
# whole delta plus the fine-tune's (what a clone must at least cost), and
# the ratios push/compress and clone/apply (issue 15's goal: <= 1.3).
#
#   scripts/bench-e2e.sh [--size MIB] [BASE.safetensors FINETUNE.safetensors]
#
# Pairs: the two files given; else the BF16 fixture pair from
# ../shared/fixtures when present; and with --size, also a generated pair
# of about MIB MiB (fixed seed). BEFORE: the tenpak executable to compare
# with (unset: no before rows). Not a test: it asserts nothing and
# needs a built tree (scripts/test.sh or cmake). Timings are wall seconds
# of one run: on a shared machine compare ratios within a run.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
tenpak="$build/tenpak"
[ -x "$tenpak" ] || { echo "bench-e2e: build first (scripts/test.sh)" >&2; exit 1; }
BEFORE=${BEFORE:-}

size=""
if [ "${1:-}" = "--size" ]; then
	size=$2
	shift 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tenpak-bench-e2e.XXXXXX")
s3pid=""
cleanup() {
	[ -n "$s3pid" ] && kill "$s3pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.2f", e - s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
dir_bytes() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

# fresh_home NAME: an isolated HOME with git and git-lfs set up.
fresh_home() {
	export HOME="$work/$1/home" GIT_CONFIG_NOSYSTEM=1
	mkdir -p "$HOME"
	git config --global user.name bench
	git config --global user.email bench@tenpak.invalid
	git config --global init.defaultBranch main
	git lfs install --skip-repo >/dev/null
}

# timed OUT CMD...: run CMD; OUT gets "WALL CPU" in seconds, CPU being the
# user+system time of CMD and of every process it waited for (git-lfs and
# its agents): on a loaded machine CPU seconds vary far less than wall.
timed() {
	out=$1
	shift
	/usr/bin/time -f "%e %U %S" -o "$out.raw" "$@"
	awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' "$out.raw" >"$out"
}
wall() { cut -d" " -f1 "$1"; }
# agents_cpu FILE: CPU seconds of the tenpak agents listed in FILE.
agents_cpu() { awk '{ s += $2 + $3 } END { printf "%.2f", s }' "$1" 2>/dev/null || echo 0; }

# use_agent TENPAK: git-lfs runs TENPAK through a wrapper that appends each
# agent's wall and CPU seconds to $AGENT_TIMES: what tenpak itself costs,
# apart from git and git-lfs.
use_agent() {
	cat >"$HOME/agent" <<-EOF
	#!/bin/sh
	exec /usr/bin/time -a -o "\$AGENT_TIMES" -f "%e %U %S" "$1" "\$@"
	EOF
	chmod +x "$HOME/agent"
	git config --global lfs.customtransfer.tenpak.path "$HOME/agent"
}
cpu() { cut -d" " -f2 "$1"; }
both() { echo "$(wall "$1")/$(cpu "$1")"; }
ratios() { echo "$(ratio "$(wall "$1")" "$(wall "$2")")/$(ratio "$(cpu "$1")" "$(cpu "$2")")"; }

# codec TENPAK: times, into $d/t.compress and $d/t.apply, the codec alone on
# the pair in $base $ft: compress of the fine-tune against the base, and
# apply of the base's whole delta then the fine-tune's (the second run, with
# the deltas in the page cache as a clone's payloads are).
codec() {
	c="$work/codec"
	rm -rf "$c" && mkdir -p "$c"
	"$1" delta compress "$base" -o "$c/base.tpd" >/dev/null
	timed "$d/t.compress" "$1" delta compress --base "$base" "$ft" -o "$c/ft.tpd" >/dev/null
	cat >"$c/apply.sh" <<-EOF
	"$1" delta apply "$c/base.tpd" -o "$c/base.out" >/dev/null &&
	"$1" delta apply --base "$c/base.out" "$c/ft.tpd" -o "$c/ft.out" >/dev/null
	EOF
	sh "$c/apply.sh"
	timed "$d/t.apply" sh "$c/apply.sh"
	rm -rf "$c"
}

# run_case NAME STORE-BYTES-CMD [TENPAK]: push base, push fine-tune, clone;
# prints a row (wall/CPU seconds), with the codec's when TENPAK is given.
run_case() {
	name=$1 measure=$2 bin=${3:-}
	d="$work/$name"
	git init -q --bare "$d/remote.git"
	git init -q "$d/repo"
	cd "$d/repo"
	git lfs track '*.safetensors' >/dev/null
	cp "$base" model.safetensors
	git add . && git commit -qm base
	git remote add origin "file://$d/remote.git"
	AGENT_TIMES="$d/a.pushb" timed "$d/t.pushb" git push -q origin main >>"$d/log" 2>&1
	after_base=$(eval "$measure")
	cp "$ft" model.safetensors
	git commit -qam finetune
	AGENT_TIMES="$d/a.push" timed "$d/t.push" git push -q origin main >>"$d/log" 2>&1
	after_ft=$(eval "$measure")
	AGENT_TIMES="$d/a.clone" timed "$d/t.clone" git clone -q "file://$d/remote.git" "$d/clone"
	cmp "$ft" "$d/clone/model.safetensors"
	cs="-" as="-" pr="-" cr="-" ap="-" ac="-" apr="-" acr="-"
	if [ -n "$bin" ]; then
		codec "$bin"
		cs=$(both "$d/t.compress") as=$(both "$d/t.apply")
		pr=$(ratios "$d/t.push" "$d/t.compress") cr=$(ratios "$d/t.clone" "$d/t.apply")
		ap=$(agents_cpu "$d/a.push") ac=$(agents_cpu "$d/a.clone")
		apr=$(ratio "$ap" "$(cpu "$d/t.compress")") acr=$(ratio "$ac" "$(cpu "$d/t.apply")")
	fi
	printf '| %-22s | %11s | %11s | %11s | %10s | %10s | %11s | %11s | %9s | %9s | %5s | %5s | %5s | %5s |\n' \
		"$name" "$(both "$d/t.pushb")" "$(both "$d/t.push")" "$(both "$d/t.clone")" \
		"$after_base" "$((after_ft - after_base))" "$cs" "$as" "$pr" "$cr" "$ap" "$ac" "$apr" "$acr"
	cd "$root"
	rm -rf "$d/clone" "$d/repo"
}

run_pair() {
	base=$1 ft=$2 tag=$4
	echo
	echo "pair: $3 ($(wc -c <"$base") + $(wc -c <"$ft") bytes); load: $(uptime | sed 's/.*load average: //')"
	echo
	echo "wall/CPU seconds; compress: delta compress ft against base; apply: delta apply base then ft"
	echo
	echo "agents: CPU seconds of the tenpak agents alone (push ft, clone) and over compress/apply CPU"
	echo
	echo "| transport | push base | push ft | clone | stored base B | stored ft B | compress | apply | push ft/compress | clone/apply | agents push | agents clone | /compress | /apply |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	fresh_home "stock-$4"
	run_case "git-lfs file:// $4" 'dir_bytes "$d/remote.git/lfs/objects"'
	if [ -n "$BEFORE" ]; then
		fresh_home "before-$4"
		"$BEFORE" install --remote "$work" --store "$work/before-$4/store" >/dev/null
		use_agent "$BEFORE"
		run_case "tenpak before $4" 'dir_bytes "$work/before-$tag/store/objects"' "$BEFORE"
	fi
	fresh_home "after-$4"
	"$tenpak" install --remote "$work" --store "$work/after-$4/store" >/dev/null
	use_agent "$tenpak"
	run_case "tenpak after $4" 'dir_bytes "$work/after-$tag/store/objects"' "$tenpak"
	if [ "${BENCH_S3:-0}" = 1 ] && sh "$root/scripts/s3rver.sh" install 2>/dev/null; then
		fresh_home "s3-$4"
		set -- $(sh "$root/scripts/s3rver.sh" start "$work/s3-$4/data" bench)
		s3pid=$1
		export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
		"$tenpak" install --remote "$work" --store "s3://bench/models?endpoint=http://127.0.0.1:$2" >/dev/null
		run_case "tenpak s3 (s3rver)" 'dir_bytes "$work/s3-$tag/data/bench" -name "*._S3rver_object"'
		kill "$s3pid" 2>/dev/null || true
		s3pid=""
	fi
}

echo "after: $tenpak; before: ${BEFORE:-none}; threads: $(nproc) cores online"
if [ $# -eq 2 ]; then
	run_pair "$1" "$2" "$(basename "$1") -> $(basename "$2")" given
elif [ -f "$root/../shared/fixtures/models/base/BF16/model.safetensors" ]; then
	run_pair "$root/../shared/fixtures/models/base/BF16/model.safetensors" \
		"$root/../shared/fixtures/models/full_ft/BF16/model.safetensors" \
		"fixture base/BF16 -> full_ft/BF16" fixture
fi
if [ -n "$size" ]; then
	# --hidden 1024 gives 27 MiB per layer.
	layers=$(( (size + 26) / 27 ))
	"$build/tp-gen" model "$work/base.safetensors" 1 --layers "$layers" --hidden 1024
	"$build/tp-gen" model "$work/ft.safetensors" 1 --layers "$layers" --hidden 1024 --finetune 2
	run_pair "$work/base.safetensors" "$work/ft.safetensors" "generated pair (seed 1, $layers layers)" "gen"
fi
