#!/bin/sh
# Faults: agents killed mid-push, corrupt and missing objects, a file-size
# limit, a read-only store, and many agents writing one store at once.
# Nothing may be lost, half-written or handed out wrong.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib.sh"

STORE="$TRASH/store"
export TENPAK_STORE="$STORE"

# The agent git-lfs runs is a wrapper that records each agent's pid, so the
# test kills only its own agents (other tests may run at the same time), and
# that applies AGENT_LIMITS (shell commands run before exec) when set.
cat >"$TRASH/agent-wrapper" <<WRAP
#!/bin/sh
echo \$\$ >>"$TRASH/agent-pids"
if [ -f "$TRASH/agent-limits" ]; then . "$TRASH/agent-limits"; fi
exec "$TENPAK" "\$@"
WRAP
chmod +x "$TRASH/agent-wrapper"

# fsck_clean: the store checks clean. An agent killed before its first write
# leaves no store at all, which is clean too (fsck refuses a missing store).
fsck_clean() {
	{ test ! -e "$TENPAK_STORE" && return 0; } ||
	"$TENPAK" store fsck >"$TRASH/fsck.txt" 2>&1 || { cat "$TRASH/fsck.txt"; return 1; }
}

test_expect_success 'setup: agent wrapper' '
	"$TENPAK" install --remote "$TRASH" >/dev/null &&
	git config --global lfs.customtransfer.tenpak.path "$TRASH/agent-wrapper"
'

test_expect_success 'agents killed with SIGKILL at random points during 20 pushes' '
	new_repo killed &&
	cd killed &&
	i=0 &&
	while [ $i -lt 20 ]; do
		i=$((i + 1)) &&
		"$TP_GEN" model m$i.safetensors $i --layers 2 &&
		gen_bytes b$i.bin $((i * 150000)) $i &&
		git add . && git commit -qm "round $i" &&
		: >"$TRASH/agent-pids" &&
		(git push -q origin main >/dev/null 2>&1 &) &&
		# a random delay of 0 to 0.7 s, then kill every agent of this push
		sleep "0.$(od -An -N1 -tu1 /dev/urandom | tr -d " " | cut -c1)" &&
		for pid in $(cat "$TRASH/agent-pids"); do kill -9 "$pid" 2>/dev/null || true; done &&
		sleep 0.3 &&
		(cd "$TRASH" && fsck_clean) || exit 1
	done &&
	# the pushes still running finish; then everything must go through
	sleep 2 &&
	git push -q origin main &&
	cd .. &&
	fsck_clean &&
	git clone -q killed.git killed-clone &&
	for f in $(cd killed && git lfs ls-files -n); do
		cmp killed/$f killed-clone/$f || exit 1
	done
'

test_expect_success 'a corrupt base: clone fails for that oid, no wrong bytes, fsck names it' '
	export TENPAK_STORE="$TRASH/store-corrupt" &&
	new_repo corrupt &&
	mkdir -p corrupt/base corrupt/ft &&
	"$TP_GEN" model corrupt/base/model.safetensors 30 &&
	"$TP_GEN" model corrupt/ft/model.safetensors 30 --finetune 31 &&
	printf "{\"_name_or_path\": \"base\"}\n" >corrupt/ft/config.json &&
	(cd corrupt && git add . && git commit -qm m && git push -q origin main) &&
	base=$(oid_of corrupt/base/model.safetensors) &&
	obj=$(store_object "$TENPAK_STORE" "$base") &&
	chmod u+w "$obj" &&
	printf "\001\002\003" | dd of="$obj" bs=1 seek=30000 conv=notrunc 2>/dev/null &&
	test_must_fail git clone -q corrupt.git corrupt-clone 2>err &&
	grep -q "$base" err &&
	! cmp -s corrupt/ft/model.safetensors corrupt-clone/ft/model.safetensors &&
	! cmp -s corrupt/base/model.safetensors corrupt-clone/base/model.safetensors &&
	test_must_fail "$TENPAK" store fsck >fsck.txt &&
	grep -q "^$base: " fsck.txt &&
	grep -q "with problems" fsck.txt
'

test_expect_success 'a missing base: the error names the base oid' '
	export TENPAK_STORE="$TRASH/store-corrupt" &&
	base=$(oid_of corrupt/base/model.safetensors) &&
	rm -f "$(store_object "$TENPAK_STORE" "$base")" &&
	ft=$(oid_of corrupt/ft/model.safetensors) &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q corrupt.git missing &&
	(cd missing && test_must_fail git lfs pull -I ft/model.safetensors 2>../err) &&
	grep -q "base $base" err &&
	grep -q "$ft" err
'

test_expect_success 'a file-size limit while storing: clean error, nothing half-written' '
	export TENPAK_STORE="$TRASH/store-full" &&
	new_repo full &&
	gen_bytes full/big.bin 3000000 40 &&
	gen_bytes full/small.bin 1000 41 &&
	(cd full && git add . && git commit -qm m) &&
	echo "ulimit -f 1000" >"$TRASH/agent-limits" &&
	(cd full && test_must_fail git push -q origin main 2>../err) &&
	rm "$TRASH/agent-limits" &&
	grep -q -i -e "too large" -e "no space" err &&
	big=$(oid_of full/big.bin) &&
	test ! -e "$(store_object "$TENPAK_STORE" "$big")" &&
	fsck_clean &&
	(cd full && git push -q origin main) &&
	fsck_clean
'

test_expect_success 'a read-only store: uploads fail clearly, downloads work' '
	export TENPAK_STORE="$TRASH/store-ro" &&
	new_repo ro &&
	gen_bytes ro/a.bin 20000 50 &&
	(cd ro && git add . && git commit -qm a && git push -q origin main) &&
	gen_bytes ro/b.bin 20000 51 &&
	(cd ro && git add . && git commit -qm b) &&
	chmod -R a-w "$TENPAK_STORE" &&
	if [ "$(id -u)" = 0 ]; then
		# root ignores modes: run the agent as nobody instead
		echo "exec setpriv --reuid=nobody --regid=nogroup --clear-groups \"$TENPAK\" \"\$@\"" \
			>"$TRASH/agent-limits" &&
		chmod -R a+rX "$TRASH"
	fi &&
	(cd ro && test_must_fail git push -q origin main 2>../err) &&
	rm -f "$TRASH/agent-limits" &&
	grep -q -i "permission denied" err &&
	obj=$(store_object "$TENPAK_STORE" "$(oid_of ro/b.bin)") &&
	test ! -e "$obj" &&
	git clone -q ro.git ro-clone &&
	cmp ro/a.bin ro-clone/a.bin &&
	chmod -R u+w "$TENPAK_STORE"
'

test_expect_success '8 agents pushing overlapping objects to one store at once' '
	export TENPAK_STORE="$TRASH/store-shared" &&
	for r in 1 2 3 4 5 6 7 8; do
		new_repo par$r &&
		(cd par$r &&
		 "$TP_GEN" model shared.safetensors 77 &&
		 "$TP_GEN" model own.safetensors $((80 + r)) --layers 2 &&
		 gen_bytes pair.bin 900000 $((90 + r % 2)) &&
		 git add . && git commit -qm p) || exit 1
	done &&
	push_all par1 par2 par3 par4 par5 par6 par7 par8 &&
	test "$(count_objects "$TENPAK_STORE")" = 11 &&
	fsck_clean &&
	grep -q "11 objects checked, 11 ok" fsck.txt
'

test_done
