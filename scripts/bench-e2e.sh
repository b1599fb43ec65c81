#!/bin/sh
# End-to-end benchmark: git push of a base model, then of a fine-tune of it
# at the same path, then a fresh git clone, through
#   - stock git-lfs to a file:// remote (git-lfs's built-in transfer),
#   - tenpak with a local directory store,
#   - tenpak with an S3 store (s3rver on 127.0.0.1).
# Prints one table row per transport: seconds and bytes stored.
#
#   scripts/bench-e2e.sh [BASE.safetensors FINETUNE.safetensors]
#
# Without arguments it uses the BF16 fixture pair from ../shared/fixtures
# when present, else a generated pair (fixed seed). Not a test: it asserts
# nothing and needs a built tree (scripts/test.sh or cmake).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
tenpak="$build/tenpak"
[ -x "$tenpak" ] || { echo "bench-e2e: build first (scripts/test.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tenpak-bench-e2e.XXXXXX")
s3pid=""
cleanup() {
	[ -n "$s3pid" ] && kill "$s3pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

if [ $# -eq 2 ]; then
	base=$1 ft=$2 label="$(basename "$1") -> $(basename "$2")"
elif [ -f "$root/../shared/fixtures/models/base/BF16/model.safetensors" ]; then
	base="$root/../shared/fixtures/models/base/BF16/model.safetensors"
	ft="$root/../shared/fixtures/models/full_ft/BF16/model.safetensors"
	label="fixture base/BF16 -> full_ft/BF16"
else
	"$build/tp-gen" model "$work/base.safetensors" 1 --layers 8 --hidden 512
	"$build/tp-gen" model "$work/ft.safetensors" 1 --layers 8 --hidden 512 --finetune 2
	base="$work/base.safetensors" ft="$work/ft.safetensors" label="generated pair (seed 1)"
fi

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.2f", e - s }'; }
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

# run_case NAME STORE-BYTES-CMD: push base, push fine-tune, clone; prints a row.
run_case() {
	name=$1 measure=$2
	d="$work/$name"
	git init -q --bare "$d/remote.git"
	git init -q "$d/repo"
	cd "$d/repo"
	git lfs track '*.safetensors' >/dev/null
	cp "$base" model.safetensors
	git add . && git commit -qm base
	git remote add origin "file://$d/remote.git"
	t0=$(now); git push -q origin main >>"$d/log" 2>&1; t1=$(now)
	after_base=$(eval "$measure")
	cp "$ft" model.safetensors
	git commit -qam finetune
	t2=$(now); git push -q origin main >>"$d/log" 2>&1; t3=$(now)
	after_ft=$(eval "$measure")
	t4=$(now); git clone -q "file://$d/remote.git" "$d/clone"; t5=$(now)
	cmp "$ft" "$d/clone/model.safetensors"
	printf '| %-22s | %11s | %9s | %7s | %13s | %11s |\n' "$name" "$(elapsed "$t0" "$t1")" \
		"$(elapsed "$t2" "$t3")" "$(elapsed "$t4" "$t5")" "$after_base" "$((after_ft - after_base))"
	cd "$root"
}

echo "pair: $label ($(wc -c <"$base") + $(wc -c <"$ft") bytes)"
echo
echo "| transport              | push base s | push ft s | clone s | stored base B | stored ft B |"
echo "|------------------------|-------------|-----------|---------|---------------|-------------|"

fresh_home stock
run_case "git-lfs file://" 'dir_bytes "$d/remote.git/lfs/objects"'

fresh_home local
"$tenpak" install --remote "$work" --store "$work/local/store" >/dev/null
run_case "tenpak local store" 'dir_bytes "$work/local/store/objects"'

if sh "$root/scripts/s3rver.sh" install 2>/dev/null; then
	fresh_home s3
	set -- $(sh "$root/scripts/s3rver.sh" start "$work/s3/data" bench)
	s3pid=$1
	export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
	"$tenpak" install --remote "$work" --store "s3://bench/models?endpoint=http://127.0.0.1:$2" >/dev/null
	run_case "tenpak s3 (s3rver)" 'dir_bytes "$work/s3/data/bench" -name "*._S3rver_object"'
else
	echo "| tenpak s3 (s3rver)     | skipped: s3rver could not be installed from npm |"
fi
