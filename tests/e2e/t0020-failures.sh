#!/bin/sh
# When the store cannot deliver an object, the other objects still arrive,
# git fails, the message names the object, and no wrong bytes are checked out.
. "$(dirname "$0")/lib.sh"

STORE="$TRASH/store"

test_expect_success 'setup: push 6 objects' '
	"$TENPAK" install --remote "$TRASH" --store "$STORE" >/dev/null &&
	new_repo work &&
	cd work &&
	for i in 1 2 3 4 5 6; do
		gen_bytes "f$i.bin" $((i * 300000)) "$i" || exit 1
	done &&
	git add . &&
	git commit -qm files &&
	git push -q origin main
'

test_expect_success 'clone with one object missing: others arrive, oid named' '
	missing=$(oid_of work/f3.bin) &&
	mv "$(store_object "$STORE" "$missing")" saved-object &&
	test_must_fail git clone -q work.git clone1 2>err &&
	grep -q "$missing" err &&
	for i in 1 2 4 5 6; do
		cmp work/f$i.bin clone1/f$i.bin || exit 1
	done &&
	! cmp -s work/f3.bin clone1/f3.bin &&
	mv saved-object "$(store_object "$STORE" "$missing")"
'

test_expect_success 'git lfs pull names the missing oid and exits non-zero' '
	missing=$(oid_of work/f5.bin) &&
	mv "$(store_object "$STORE" "$missing")" saved-object &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q work.git lazy &&
	(cd lazy && test_must_fail git lfs pull 2>../err) &&
	grep -q "$missing" err &&
	cmp work/f4.bin lazy/f4.bin &&
	mv saved-object "$(store_object "$STORE" "$missing")"
'

test_expect_success 'a corrupt stored object is refused, never checked out' '
	bad=$(oid_of work/f2.bin) &&
	obj=$(store_object "$STORE" "$bad") &&
	cp "$obj" saved-object &&
	chmod u+w "$obj" &&
	printf "\377" | dd of="$obj" bs=1 seek=100 conv=notrunc 2>/dev/null &&
	test_must_fail git clone -q work.git clone2 2>err &&
	grep -q "$bad" err &&
	! cmp -s work/f2.bin clone2/f2.bin &&
	test ! -f "clone2/.git/lfs/objects/$(echo $bad | cut -c1-2)/$(echo $bad | cut -c3-4)/$bad" &&
	test -z "$(ls clone2/.git/lfs/tmp)" &&
	cmp work/f1.bin clone2/f1.bin &&
	cp saved-object "$obj"
'

test_expect_success 'an unusable store fails the push at init, clearly' '
	cd work &&
	gen_bytes new.bin 1000 99 &&
	git add new.bin &&
	git commit -qm new &&
	touch "$TRASH/not-a-dir" &&
	test_must_fail env TENPAK_STORE="$TRASH/not-a-dir" git push -q origin main 2>err &&
	grep -q "not-a-dir" err &&
	test_must_fail env TENPAK_STORE="s4://nope" git push -q origin main 2>err &&
	grep -q "unsupported scheme" err &&
	git push -q origin main
'

test_expect_success 'a read-only store still serves clones' '
	chmod -R a-w "$STORE" &&
	git clone -q work.git ro-clone &&
	cmp work/f6.bin ro-clone/f6.bin &&
	chmod -R u+w "$STORE"
'

test_done
