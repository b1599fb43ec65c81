#!/bin/sh
# tenpak demo: push a base model and a fine-tune of it through tenpak with
# real git and git-lfs, clone them elsewhere, verify every byte, and show
# what the store holds.
#
# Everything happens in a temporary directory with its own HOME, so your
# git config and stores are not touched. Builds tenpak first.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
tenpak="$build/tenpak"
gen="$build/tp-gen"

step() { printf '\n== %s\n' "$*"; }

# Always (re)build: cmake does nothing when the build is up to date, and a
# checkout that moved on must not demo a stale binary.
step "building tenpak"
sh "$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
for tool in git git-lfs; do
	command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run scripts/deps.sh as root" >&2; exit 1; }
done

demo=$(mktemp -d "${TMPDIR:-/tmp}/tenpak-demo.XXXXXX")
trap 'rm -rf "$demo"' EXIT
export HOME="$demo/home" GIT_CONFIG_NOSYSTEM=1
unset GIT_DIR GIT_WORK_TREE TENPAK_STORE
mkdir -p "$HOME"
git config --global user.name "tenpak demo"
git config --global user.email "demo@tenpak.invalid"
git config --global init.defaultBranch main
git lfs install --skip-repo >/dev/null

step "tenpak install --store $demo/store --remote $demo/remote.git"
"$tenpak" install --store "$demo/store" --remote "$demo/remote.git"

step "a repository with a base model and a fine-tune of it (generated, BF16)"
git init -q --bare "$demo/remote.git"
git init -q "$demo/work"
cd "$demo/work"
git lfs track '*.safetensors' >/dev/null
mkdir -p base finetuned
"$gen" model base/model.safetensors 2024 --layers 6 --hidden 384
"$gen" model finetuned/model.safetensors 2024 --layers 6 --hidden 384 --finetune 7
printf '{"_name_or_path": "base", "architectures": ["LlamaForCausalLM"]}\n' >finetuned/config.json
git add .
git commit -qm "base model and its fine-tune"
ls -l base/model.safetensors finetuned/model.safetensors | awk '{print "  " $5 " bytes  " $9}'

step "git push (objects go to the store through tenpak)"
git remote add origin "$demo/remote.git"
start=$(date +%s.%N)
git push -q origin main
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "  pushed in %.2f s\n", e - s }'

step "git clone elsewhere, then verify every byte"
start=$(date +%s.%N)
git clone -q "$demo/remote.git" "$demo/clone"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "  cloned in %.2f s\n", e - s }'
for f in base/model.safetensors finetuned/model.safetensors finetuned/config.json; do
	cmp "$demo/work/$f" "$demo/clone/$f"
	echo "  identical: $f  sha256 $(sha256sum "$demo/clone/$f" | cut -c1-16)..."
done

step "tenpak store stats"
"$tenpak" store stats

echo
echo "demo: OK, a verified round trip through tenpak"
