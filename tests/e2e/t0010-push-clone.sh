#!/bin/sh
# Objects of every size go through tenpak to a local store and come back
# byte for byte, through clone, pull, fetch, bare repositories and worktrees.
. "$(dirname "$0")/lib.sh"

STORE="$TRASH/store"
SIZES="0 1 2 100 4095 4096 65537 1048575 1048576 1048577 3145728 5242887"

test_expect_success 'setup: tenpak installed, repository with 13 model files' '
	"$TENPAK" install --remote "$TRASH" --store "$STORE" >/dev/null &&
	new_repo work &&
	cd work &&
	i=0 &&
	for size in $SIZES; do
		i=$((i + 1)) &&
		gen_bytes "f$i.bin" "$size" "$i" || exit 1
	done &&
	mkdir -p models/base &&
	"$TP_GEN" model models/base/model.safetensors 7 &&
	git add . &&
	git commit -qm "model files" &&
	git lfs ls-files >../lfs-files &&
	test "$(wc -l <../lfs-files)" -ge 12
'

check_tree() {
	# every tracked file in $1 equals the one in work/
	(cd "$TRASH/work" && git ls-files) >"$TRASH/check_tree.list" &&
	test -s "$TRASH/check_tree.list" &&
	while read -r check_tree_f; do
		cmp "$TRASH/work/$check_tree_f" "$1/$check_tree_f" || return 1
	done <"$TRASH/check_tree.list"
}

test_expect_success 'push stores every object, compressed' '
	cd work &&
	git push -q origin main 2>err &&
	cd .. &&
	objects=$(count_objects "$STORE") &&
	(cd work && git lfs ls-files) >lfs-files &&
	lfs_count=$(wc -l <lfs-files) &&
	test "$objects" -eq "$lfs_count" &&
	oid=$(oid_of work/models/base/model.safetensors) &&
	head -c 4 "$(store_object "$STORE" "$oid")" | grep -q TPKO &&
	test -z "$(find "$STORE/tmp" -type f)"
'

test_expect_success 'clone brings every file back byte for byte' '
	git clone -q work.git clone &&
	check_tree "$TRASH/clone" &&
	test -z "$(ls clone/.git/lfs/tmp)"
'

test_expect_success 'a second push of the same objects uploads nothing new' '
	git init -q --bare second.git &&
	before=$(count_objects "$STORE") &&
	touch marker &&
	sleep 1 &&
	(cd work && git push -q ../second.git main) &&
	test "$(count_objects "$STORE")" -eq "$before" &&
	test -z "$(find "$STORE/objects" -type f -newer marker)"
'

test_expect_success 'GIT_LFS_SKIP_SMUDGE clone, then git lfs pull' '
	GIT_LFS_SKIP_SMUDGE=1 git clone -q work.git lazy &&
	grep -q "^version https://git-lfs" lazy/f12.bin &&
	(cd lazy && git lfs pull) &&
	check_tree "$TRASH/lazy"
'

test_expect_success 'git lfs fetch then checkout, from a subdirectory' '
	GIT_LFS_SKIP_SMUDGE=1 git clone -q work.git fetched &&
	(cd fetched/models && git lfs fetch && git lfs checkout) &&
	check_tree "$TRASH/fetched"
'

test_expect_success 'bare repository: objects land in its lfs directory' '
	git clone -q --bare work.git bare.git &&
	(cd bare.git && git lfs fetch --all) &&
	oid=$(oid_of work/f12.bin) &&
	cmp work/f12.bin "bare.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid"
'

test_expect_success 'worktree: objects land in the common git directory' '
	GIT_LFS_SKIP_SMUDGE=1 git clone -q work.git main-wt &&
	(cd main-wt && git worktree add -q ../linked HEAD~0 2>/dev/null || git worktree add ../linked) &&
	(cd linked && git lfs pull) &&
	check_tree "$TRASH/linked" &&
	oid=$(oid_of work/f11.bin) &&
	test -f "main-wt/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid"
'

test_expect_success 'TENPAK_STORE overrides git config' '
	other="$TRASH/other-store" &&
	git init -q --bare third.git &&
	(cd work && TENPAK_STORE="$other" git push -q ../third.git main) &&
	test "$(count_objects "$other")" -eq "$(count_objects "$STORE")" &&
	TENPAK_STORE="$other" git clone -q third.git from-other &&
	check_tree "$TRASH/from-other"
'

test_expect_success 'store stats reports logical and physical bytes' '
	"$TENPAK" store stats --json >stats.json &&
	grep -q "\"objects\":$(count_objects "$STORE")," stats.json &&
	logical=$(sed "s/.*\"logical_bytes\":\([0-9]*\).*/\1/" stats.json) &&
	physical=$(sed "s/.*\"physical_bytes\":\([0-9]*\).*/\1/" stats.json) &&
	expected=$(cd work && git lfs ls-files -s | sed "s/.*(\(.*\))/\1/" | wc -l) &&
	sum=0 &&
	for f in $(cd work && git lfs ls-files -n); do
		sum=$((sum + $(wc -c <"work/$f"))) || exit 1
	done &&
	test "$logical" -eq "$sum" &&
	test "$physical" -gt 0 &&
	"$TENPAK" store stats >stats.txt &&
	grep -q "^objects: *$(count_objects "$STORE")$" stats.txt
'

test_done
