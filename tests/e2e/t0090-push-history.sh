#!/bin/sh
# Lineage for every version in a push, not only the branch tip: several
# checkpoints pushed at once, a rebased branch, `git lfs push --all`, a
# shallow clone, a base named by oid: that only the store has, and evidence
# too long for its buffer.
. "$(dirname "$0")/lib.sh"

# Each test uses its own store, so its objects are its own.
use_store() {
	export TENPAK_STORE="$TRASH/$1"
}

# gen_model OUT SEED [--finetune S2]: a small model (~0.6 MB).
gen_model() {
	"$TP_GEN" model "$@" --layers 2 --hidden 64
}

# checkpoints DIR SEED FROM TO: checkpoints FROM..TO of one training run at
# DIR/model.safetensors, one commit each; checkpoint 1 is the run's start.
checkpoints() {
	for k in $(seq "$3" "$4"); do
		if [ "$k" = 1 ]; then
			gen_model "$1/model.safetensors" "$2" || return 1
		else
			gen_model "$1/model.safetensors" "$2" --finetune $(($2 + k)) || return 1
		fi
		(cd "$1" && git add . && git commit -qm "checkpoint $k") || return 1
	done
}

# kinds: "N whole, M delta" over the store, every object rebuilt by fsck.
kinds() {
	"$TENPAK" store fsck >"$TRASH/fsck.txt" || { cat "$TRASH/fsck.txt"; return 1; }
	echo "$(grep -c ": ok, whole" "$TRASH/fsck.txt") whole, $(grep -c ": ok, delta" "$TRASH/fsck.txt") delta"
}

# kind_of OID: "whole-codec", "delta", ... as fsck reports it.
kind_of() {
	"$TENPAK" store fsck | sed -n "s/^$1: ok, \([a-z-]*\),.*/\1/p"
}

# oid_at REPO REV: the oid of model.safetensors at REV.
oid_at() {
	git -C "$TRASH/$1" cat-file -p "$2:model.safetensors" | sed -n "s/^oid sha256://p"
}

test_expect_success 'setup' '
	"$TENPAK" install --remote "$TRASH" >/dev/null
'

test_expect_success 'five checkpoints in one push: one whole, four deltas' '
	use_store s-five &&
	new_repo five &&
	checkpoints five 40 1 5 &&
	(cd five && git push -q origin main) &&
	test "$(kinds)" = "1 whole, 4 delta" &&
	test "$(kind_of "$(oid_at five HEAD~4)")" = whole-codec &&
	"$TENPAK" store fsck | grep -q "^$(oid_at five HEAD): ok, delta, depth 4," &&
	test -s five/.git/tenpak/pointer-index &&
	clone_check five model.safetensors
'

# index_counts REPO: "(N cached, M scanned)" from the lineage index's trace.
index_counts() {
	(cd "$TRASH/$1" && TENPAK_TRACE=1 "$TENPAK" lineage >/dev/null 2>"$TRASH/trace") &&
	sed -n "s/.*lineage index: .*history of [0-9]* commits \(([0-9]* cached, [0-9]* scanned)\).*/\1/p" \
		"$TRASH/trace"
}

test_expect_success 'the pointer index is cached, read again, rebuilt when damaged' '
	n=$(git -C five rev-list --count HEAD) &&
	test "$(index_counts five)" = "($n cached, 0 scanned)" &&
	checkpoints five 40 6 6 &&
	test "$(index_counts five)" = "($n cached, 1 scanned)" &&
	n=$((n + 1)) &&
	test "$(index_counts five)" = "($n cached, 0 scanned)" &&
	sed -i "\$d" five/.git/tenpak/pointer-index &&
	test "$(index_counts five)" = "(0 cached, $n scanned)" &&
	sed -i "s/^c \([0-9a-f]*\) /c \1x/" five/.git/tenpak/pointer-index &&
	test "$(index_counts five)" = "(0 cached, $n scanned)" &&
	test "$(index_counts five)" = "($n cached, 0 scanned)" &&
	test -z "$(ls five/.git/tenpak | grep -v "^pointer-index$")"
'

test_expect_success 'older versions keep the metadata of their own commit' '
	use_store s-meta &&
	new_repo meta &&
	mkdir -p meta/base meta/ft &&
	gen_model meta/base/model.safetensors 30 &&
	(cd meta && git add . && git commit -qm base && git push -q origin main) &&
	gen_model meta/ft/model.safetensors 30 --finetune 31 &&
	printf "{\"_name_or_path\": \"../base\"}\n" >meta/ft/config.json &&
	(cd meta && git add . && git commit -qm "fine-tune of base") &&
	old_ft=$(git -C meta cat-file -p HEAD:ft/model.safetensors | sed -n "s/^oid sha256://p") &&
	gen_model meta/ft/model.safetensors 70 &&
	git -C meta rm -q ft/config.json &&
	(cd meta && git add . && git commit -qm "unrelated model, no config" &&
	 git push -q origin main) &&
	test "$(kind_of "$old_ft")" = delta
'

test_expect_success 'a rebased branch pushed at once' '
	use_store s-rebase &&
	new_repo rebase &&
	checkpoints rebase 50 1 1 &&
	(cd rebase && git push -q origin main &&
	 git checkout -qb run && cd .. && checkpoints rebase 50 2 4 &&
	 cd rebase && git checkout -q main && echo notes >notes.txt &&
	 git add notes.txt && git commit -qm notes && git push -q origin main &&
	 git checkout -q run && git rebase -q main && git push -q origin run) &&
	test "$(kinds)" = "1 whole, 3 delta" &&
	git clone -q -b run rebase.git rebase-check &&
	cmp rebase/model.safetensors rebase-check/model.safetensors
'

test_expect_success 'git lfs push --all: every branch, every version' '
	use_store s-all &&
	new_repo all &&
	checkpoints all 60 1 3 &&
	(cd all && git checkout -qb exp HEAD~1) &&
	checkpoints all 60 6 7 &&
	(cd all && git checkout -q main && git lfs push --all origin >/dev/null 2>&1) &&
	test "$(kinds)" = "1 whole, 4 delta" &&
	test "$(kind_of "$(oid_at all exp)")" = delta &&
	"$TENPAK" store fsck | grep -q "^$(oid_at all exp): ok, delta, depth 3,"
'

test_expect_success 'a new checkpoint on a shallow clone is a delta of the last one' '
	use_store s-shallow &&
	new_repo deep &&
	checkpoints deep 80 1 3 &&
	(cd deep && git push -q origin main) &&
	git clone -q --depth 1 "file://$TRASH/deep.git" shallow &&
	test -f shallow/.git/shallow &&
	cmp deep/model.safetensors shallow/model.safetensors &&
	checkpoints shallow 80 4 4 &&
	(cd shallow && git push -q origin main) &&
	test "$(kind_of "$(oid_at shallow HEAD)")" = delta &&
	"$TENPAK" store fsck | grep -q "^$(oid_at shallow HEAD): ok, delta, depth 3," &&
	git clone -q deep.git deep-check &&
	cmp shallow/model.safetensors deep-check/model.safetensors &&
	test "$(index_counts shallow)" = "(2 cached, 0 scanned)" &&
	git -C shallow fetch -q --unshallow &&
	test "$(index_counts shallow)" = "(0 cached, 5 scanned)"
'

test_expect_success 'an oid: base that only the store has' '
	use_store s-oid &&
	new_repo donor &&
	gen_model donor/model.safetensors 90 &&
	(cd donor && git add . && git commit -qm base && git push -q origin main) &&
	base=$(oid_of donor/model.safetensors) &&
	new_repo oidref &&
	gen_model oidref/model.safetensors 90 --finetune 91 &&
	(cd oidref && git config tenpak.model.safetensors.base "oid:$base" &&
	 git add . && git commit -qm fine-tune &&
	 "$TENPAK" lineage model.safetensors >../lineage.txt &&
	 git push -q origin main) &&
	grep -q "= oid:$base (object)" lineage.txt &&
	test ! -e "oidref/.git/lfs/objects/$(echo "$base" | cut -c1-2)/$(echo "$base" | cut -c3-4)/$base" &&
	test "$(kind_of "$(oid_at oidref HEAD)")" = delta &&
	clone_check oidref model.safetensors
'

test_expect_success 'evidence longer than its buffer is cut, the push goes on' '
	use_store s-long &&
	new_repo long &&
	deep=$(printf "level/%.0s" $(seq 1 150))ft &&
	mkdir -p long/base "long/$deep" &&
	gen_model long/base/model.safetensors 100 &&
	gen_model "long/$deep/model.safetensors" 100 --finetune 101 &&
	name=base/$(printf "./%.0s" $(seq 1 3000)) &&
	printf "{\"_name_or_path\": \"%s\"}\n" "$name" >"long/$deep/config.json" &&
	(cd long && git add . && git commit -qm "deep fine-tune" &&
	 "$TENPAK" lineage --json "$deep/model.safetensors" >../lineage.json &&
	 git push -q origin main) &&
	grep -q "\.\.\. (repository path)\|\.\.\.\"" lineage.json &&
	test "$(kind_of "$(oid_of "long/$deep/model.safetensors")")" = delta &&
	clone_check long "$deep/model.safetensors"
'

test_done
