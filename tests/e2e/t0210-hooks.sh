#!/bin/sh
# The pre-push hook: installed over git-lfs's hook (uploads still happen),
# a foreign hook chained and put back, core.hooksPath, which models a push
# changes, and that report mode never blocks a push on its own failure.
# The weight files here have no config.json, so the optimizer fails on them
# at once (t0215 runs it for real).
. "$(dirname "$0")/lib.sh"

STORE="$TRASH/store"

# weights FILE SEED: a small generated model file.
weights() {
	mkdir -p "$(dirname "$1")" &&
	"$TP_GEN" model "$1" "$2" --layers 1 --hidden 64
}

# optimized ERR: the model directories the hook started the optimizer on,
# one a line, in order.
optimized() {
	sed -n "s/^tenpak: optimizing \([^ ]*\) (.*/\1/p" "$1"
}

# push_while_locked LOCK: git push while another process holds LOCK, which
# it lets go once the hook says it waits for it (or after a minute); the
# push's exit status in push.rc, its stderr in err. (The lock is not taken
# by this shell: the push and its hook would inherit it.)
push_while_locked() {
	rm -f held err &&
	flock "$1" sh -c 'touch held; i=0
		until grep -q "waiting for an earlier push" err 2>/dev/null || [ $i -ge 600 ]; do
			i=$((i + 1)); sleep 0.1
		done' &
	push_while_locked_i=0 &&
	until test -e held; do
		push_while_locked_i=$((push_while_locked_i + 1)) &&
		test "$push_while_locked_i" -lt 600 &&
		sleep 0.1 || return 1
	done &&
	{ git push -q origin main 2>err && echo 0 >push.rc || echo $? >push.rc; } &&
	wait
}

test_expect_success 'hooks, hook, report: --help exits 0, usage errors exit 2' '
	"$TENPAK" hooks --help >out &&
	grep -q "^usage: tenpak hooks install | uninstall" out &&
	"$TENPAK" hook --help >out &&
	grep -q "^usage: tenpak hook pre-push REMOTE URL" out &&
	grep -q "tenpak.optimize.onpush" out &&
	"$TENPAK" report --help >out &&
	grep -q "^usage: tenpak report OID|PATH" out &&
	"$TENPAK" --help >out &&
	grep -q "^  hooks " out && grep -q "^  hook " out && grep -q "^  report " out &&
	test_usage_errors hooks hooks "" "bogus" "install x" "--bogus" &&
	test_usage_errors hook hook "" "pre-push" "pre-push a" "pre-push a b c" "bogus a b" &&
	test_usage_errors report report "" "a b" "--bogus x"
'

test_expect_success 'setup: tenpak routes the remote; git-lfs wrote its pre-push hook' '
	"$TENPAK" install --remote "$TRASH" --store "$STORE" >/dev/null &&
	new_repo work &&
	grep -q "git lfs pre-push" work/.git/hooks/pre-push &&
	cp work/.git/hooks/pre-push lfs-hook
'

test_expect_success 'install over git-lfs hook keeps it aside, not chained' '
	cd work &&
	"$TENPAK" hooks install >out &&
	grep -q "^tenpak: pre-push hook installed: $TRASH/work/.git/hooks/pre-push$" out &&
	grep -q "git-lfs.s own hook is kept as" out &&
	cmp .git/hooks/pre-push.tenpak-saved ../lfs-hook &&
	grep -q "^chain=0$" .git/hooks/pre-push &&
	test -x .git/hooks/pre-push &&
	"$TENPAK" hooks install >out &&
	grep -q "^tenpak: pre-push hook updated" out &&
	cmp .git/hooks/pre-push.tenpak-saved ../lfs-hook
'

test_expect_success 'with onpush unset the hook is quiet and LFS objects reach the store' '
	cd work &&
	weights models/a/model.safetensors 1 &&
	git add models &&
	git commit -qm "model a" &&
	git push -q origin main 2>err &&
	test_must_fail grep -q "^tenpak" err &&
	test ! -e .git/tenpak/reports &&
	test -f "$(store_object "$STORE" "$(oid_of models/a/model.safetensors)")" &&
	clone_check work models/a/model.safetensors
'

test_expect_success 'report: a failing optimizer warns and the push goes on' '
	cd work &&
	git config tenpak.optimize.onpush report &&
	weights models/a/model.safetensors 2 &&
	weights models/keep/model.safetensors 3 &&
	git add models &&
	git commit -qm "model a changed, keep added" &&
	git push -q origin main 2>err &&
	optimized err >dirs &&
	printf "models/a\nmodels/keep\n" >want &&
	diff -u want dirs &&
	grep -q "^tenpak: warning: models/a: the optimizer failed (exit [0-9]*)" err &&
	test -s .git/tenpak/reports/$(git rev-parse HEAD)/models/a/optimize.log &&
	test "$(git rev-parse HEAD)" = "$(git -C ../work.git rev-parse main)" &&
	test -f "$(store_object "$STORE" "$(oid_of models/a/model.safetensors)")"
'

test_expect_success 'only changed models: a sharded one lists every shard, others are left' '
	cd work &&
	weights ../big.safetensors 4 &&
	mkdir -p models/b &&
	"$TP_GEN" shard ../big.safetensors models/b 2 &&
	weights models/a/model.safetensors 5 &&
	echo notes >models/keep/README.md &&
	git add models &&
	git commit -qm "a changed, b added sharded, keep notes" &&
	git push -q origin main 2>err &&
	optimized err >dirs &&
	printf "models/a\nmodels/b\n" >want &&
	diff -u want dirs &&
	grep -q "^tenpak: optimizing models/a (1 weight file, commit" err &&
	grep -q "^tenpak: optimizing models/b (2 weight files, commit" err
'

test_expect_success 'a push that changes no weight file, or deletes one, optimizes nothing' '
	cd work &&
	echo more >>models/keep/README.md &&
	git rm -q models/keep/model.safetensors &&
	git commit -qm "keep: notes, weights gone" &&
	git push -q origin main 2>err &&
	test "$(git rev-parse HEAD)" = "$(git -C ../work.git rev-parse main)" &&
	test_must_fail grep -q "^tenpak: optimizing" err
'

test_expect_success 'a new branch is compared with its merge base with the remote branches' '
	cd work &&
	git checkout -q -b feature &&
	weights models/d/model.safetensors 6 &&
	git add models &&
	git commit -qm "model d" &&
	git push -q origin feature 2>err &&
	optimized err >dirs &&
	echo models/d >want &&
	diff -u want dirs &&
	git push -q origin --delete feature 2>err &&
	test_must_fail grep -q "^tenpak: optimizing" err &&
	git checkout -q main
'

test_expect_success 'the same model reached by two refs is optimized once' '
	cd work &&
	weights models/e/model.safetensors 7 &&
	git add models &&
	git commit -qm "model e" &&
	git branch -f twin &&
	git push -q origin main twin 2>err &&
	optimized err >dirs &&
	echo models/e >want &&
	diff -u want dirs
'

test_expect_success 'enforce: a model that cannot be checked refuses the push; --no-verify skips' '
	cd work &&
	git config tenpak.optimize.onpush enforce &&
	weights models/a/model.safetensors 8 &&
	git commit -qam "a again" &&
	test_must_fail git push -q origin main 2>err &&
	grep -q "^tenpak: push refused: models/a could not be checked" err &&
	test "$(git -C ../work.git rev-parse main)" != "$(git rev-parse HEAD)" &&
	git push -q --no-verify origin main &&
	test "$(git -C ../work.git rev-parse main)" = "$(git rev-parse HEAD)"
'

test_expect_success 'enforce waits for a run of an earlier push on the same model' '
	cd work &&
	weights models/a/model.safetensors 12 &&
	git commit -qam "a, while locked" &&
	mkdir -p .git/tenpak/locks &&
	push_while_locked .git/tenpak/locks/$(oid_of models/a/model.safetensors).lock &&
	test "$(cat push.rc)" = 1 &&
	grep -q "^tenpak: waiting for an earlier push.s optimization of models/a$" err &&
	grep -q "^tenpak: push refused: models/a could not be checked" err &&
	git push -q --no-verify origin main
'

test_expect_success 'an unknown onpush value refuses the push, naming the key' '
	cd work &&
	git config tenpak.optimize.onpush sometimes &&
	weights models/a/model.safetensors 9 &&
	git commit -qam "a once more" &&
	test_must_fail git push -q origin main 2>err &&
	grep -q "tenpak.optimize.onpush = .sometimes.: use off, report, background or enforce" err &&
	git config tenpak.optimize.onpush off &&
	git push -q origin main
'

test_expect_success 'hook pre-push: bad input warns in report mode, refuses in enforce' '
	cd work &&
	git config tenpak.optimize.onpush report &&
	echo "not a ref line" >bad &&
	"$TENPAK" hook pre-push origin ../work.git <bad >out 2>err &&
	grep -q "^tenpak: warning: pre-push: pre-push input line 1 is not" err &&
	git config tenpak.optimize.onpush enforce &&
	test_expect_code 1 "$TENPAK" hook pre-push origin ../work.git <bad 2>err &&
	grep -q "push refused" err &&
	git config tenpak.optimize.onpush off
'

test_expect_success 'a foreign hook is chained, can refuse the push, and comes back' '
	new_repo other &&
	cd other &&
	cat >.git/hooks/pre-push <<-\EOF &&
	#!/bin/sh
	echo "foreign $1 $2" >>../foreign.log
	cat >>../foreign.log
	test ! -e ../refuse
	EOF
	cp .git/hooks/pre-push ../foreign-hook &&
	"$TENPAK" hooks install >out &&
	grep -q "the hook that was there is kept as .*pre-push.tenpak-saved and runs first" out &&
	grep -q "^chain=1$" .git/hooks/pre-push &&
	weights m/model.safetensors 10 &&
	git add m &&
	git commit -qm m &&
	git push -q origin main &&
	grep -q "^foreign origin ../other.git$" ../foreign.log &&
	grep -q "^refs/heads/main $(git rev-parse HEAD) refs/heads/main 0000000000000000000000000000000000000000$" ../foreign.log &&
	test -f "$(store_object "$STORE" "$(oid_of m/model.safetensors)")" &&
	touch ../refuse &&
	echo x >x.txt &&
	git add x.txt &&
	git commit -qm x &&
	test_must_fail git push -q origin main &&
	rm ../refuse &&
	"$TENPAK" hooks uninstall >out &&
	grep -q "^tenpak: pre-push hook removed: .* (the earlier hook is back)$" out &&
	cmp .git/hooks/pre-push ../foreign-hook &&
	test ! -e .git/hooks/pre-push.tenpak-saved &&
	"$TENPAK" hooks uninstall >out &&
	grep -q "is not tenpak.s hook: left as it is" out &&
	cmp .git/hooks/pre-push ../foreign-hook
'

test_expect_success 'git-lfs hook written over tenpak.s is replaced on install' '
	cd work &&
	cp ../lfs-hook .git/hooks/pre-push &&
	"$TENPAK" hooks install >out &&
	grep -q "^tenpak: pre-push hook updated" out &&
	grep -q "^chain=0$" .git/hooks/pre-push &&
	cmp .git/hooks/pre-push.tenpak-saved ../lfs-hook
'

test_expect_success 'a foreign hook written over tenpak.s is never lost' '
	cd other &&
	"$TENPAK" hooks install >/dev/null &&
	echo "#!/bin/sh" >.git/hooks/pre-push &&
	test_must_fail "$TENPAK" hooks install 2>err &&
	grep -q "is not tenpak.s hook and .*pre-push.tenpak-saved exists already" err &&
	echo "#!/bin/sh" >want &&
	cmp want .git/hooks/pre-push &&
	cmp ../foreign-hook .git/hooks/pre-push.tenpak-saved
'

test_expect_success 'core.hooksPath is where the hook goes and where git runs it' '
	new_repo hp &&
	cd hp &&
	cp .git/hooks/pre-push ../hp-lfs-hook &&
	git config core.hooksPath my-hooks &&
	"$TENPAK" hooks install >out &&
	grep -q "installed: $TRASH/hp/my-hooks/pre-push$" out &&
	cmp .git/hooks/pre-push ../hp-lfs-hook &&
	git config tenpak.optimize.onpush report &&
	weights m/model.safetensors 11 &&
	git add m &&
	git commit -qm m &&
	git push -q origin main 2>err &&
	optimized err >dirs &&
	echo m >want &&
	diff -u want dirs &&
	"$TENPAK" hooks uninstall >out &&
	test ! -e my-hooks/pre-push
'

test_expect_success 'install --hooks and uninstall --hooks' '
	new_repo ih &&
	cd ih &&
	cp .git/hooks/pre-push ../ih-lfs-hook &&
	"$TENPAK" install --local --hooks >out &&
	grep -q "^tenpak: pre-push hook installed" out &&
	grep -q "^tenpak=" .git/hooks/pre-push &&
	"$TENPAK" uninstall --local --hooks >out &&
	grep -q "^tenpak: pre-push hook removed" out &&
	cmp .git/hooks/pre-push ../ih-lfs-hook &&
	(cd "$TRASH" && test_must_fail "$TENPAK" hooks install 2>err) &&
	grep -q "inside one" "$TRASH/err"
'

test_expect_success 'report: a model without a stored report is an error naming its oid' '
	cd work &&
	oid=$(oid_of models/a/model.safetensors) &&
	test_expect_code 1 "$TENPAK" report models/a 2>err &&
	grep -q "^tenpak: report: no report for $oid in $STORE" err &&
	test_expect_code 1 "$TENPAK" report "$oid" --json 2>err &&
	grep -q "no report for $oid" err &&
	test_expect_code 1 "$TENPAK" report models/nothing-here 2>err &&
	grep -q "^tenpak: report: " err
'

test_expect_success 'background: a log past 1 MiB moves to background.log.1 first' '
	cd work &&
	log=.git/tenpak/reports/background.log &&
	mkdir -p .git/tenpak/reports &&
	head -c 1100000 /dev/zero | tr "\\0" x >"$log" &&
	git config tenpak.optimize.onpush background &&
	weights models/a/model.safetensors 40 &&
	git commit -qam "a for a background run" &&
	git push -q origin main 2>err &&
	git config tenpak.optimize.onpush off &&
	grep -q "^tenpak: optimizing 1 model in the background" err &&
	test "$(wc -c <"$log.1")" -eq 1100000 &&
	i=0 &&
	until grep -q "models/a: the optimizer failed" "$log"; do
		i=$((i + 1)) && test $i -lt 600 && sleep 0.1 || exit 1
	done &&
	test "$(wc -c <"$log")" -lt 1048576 &&
	grep -q "^tenpak: background run [0-9]* started" "$log"
'

test_done
