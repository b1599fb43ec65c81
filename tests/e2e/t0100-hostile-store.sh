#!/bin/sh
# Wrong local bases and hostile stores: a local copy (HF cache blob, LFS
# object) is used only when it hashes to its oid; a store cannot make a
# download do unbounded work or fill the disk; uploads check their size;
# tenpak.verify=required refuses objects without a signed manifest.
. "$(dirname "$0")/lib.sh"

ZERO=0000000000000000000000000000000000000000000000000000000000000000

use_store() {
	export TENPAK_STORE="$TRASH/$1"
}

# damage FILE: change 4 bytes in the middle, keeping its size.
damage() {
	chmod u+w "$1" &&
	printf "\001\002\003\004" | dd of="$1" bs=1 seek=$(($(wc -c <"$1") / 2)) conv=notrunc 2>/dev/null
}

# kind_of OBJECT-FILE: the kind byte of a stored object (1 zstd, 2 delta, 3 codec).
kind_of() {
	od -An -tu1 -j5 -N1 "$1" | tr -d " "
}

# rewrite_manifest OBJECT-FILE PERL: run the perl code on the manifest of a
# kind 2 or 3 object (in $_), as a hostile store could.
rewrite_manifest() {
	chmod u+w "$1" &&
	perl -e '
		open(my $f, "<:raw", $ARGV[0]) or die "$ARGV[0]: $!";
		local $/; my $d = <$f>; close $f;
		my $l = unpack("V", substr($d, 16, 4)); my $m = substr($d, 20, $l);
		$_ = $m; eval $ARGV[1]; die $@ if $@; die "manifest unchanged\n" if $_ eq $m;
		open($f, ">:raw", $ARGV[0]) or die "$ARGV[0]: $!";
		print $f substr($d, 0, 16), pack("V", length), $_, substr($d, 20 + $l); close $f;
	' "$1" "$2"
}

# put_whole STORE OID SIZE: a kind 1 object claiming SIZE bytes, its
# payload zstd read from stdin, written straight into a local store.
put_whole() {
	obj=$(store_object "$1" "$2") &&
	mkdir -p "$(dirname "$obj")" &&
	{ perl -e 'print "TPKO", pack("CCv", 1, 1, 0), pack("Q<", $ARGV[0])' "$3" && cat; } >"$obj"
}

# request download OID SIZE | request upload OID SIZE PATH: the input of
# one transfer by the agent, in $TRASH/in.
request() {
	printf "{\"event\":\"init\",\"operation\":\"%s\",\"remote\":\"origin\"}\n" "$1" >"$TRASH/in" &&
	if [ "$1" = upload ]; then
		printf "{\"event\":\"upload\",\"oid\":\"%s\",\"size\":%s,\"path\":\"%s\"}\n" "$2" "$3" "$4"
	else
		printf "{\"event\":\"download\",\"oid\":\"%s\",\"size\":%s}\n" "$2" "$3"
	fi >>"$TRASH/in"
}

# agent [COMMAND...]: the agent (run by COMMAND, e.g. strace, if given) in
# agentrepo/ on $TRASH/in; replies in out, log in err.
agent() {
	(cd "$TRASH/agentrepo" && "$@" "$TENPAK" agent <"$TRASH/in" >"$TRASH/out" 2>"$TRASH/err")
}

# git-lfs keeps an agent's stderr to itself: the agent it runs is a wrapper
# that appends it to agent.log.
cat >"$TRASH/agent-wrapper" <<WRAP
#!/bin/sh
exec "$TENPAK" "\$@" 2>>"$TRASH/agent.log"
WRAP
chmod +x "$TRASH/agent-wrapper"

test_expect_success 'setup' '
	"$TENPAK" install --remote "$TRASH" >/dev/null &&
	git config --global lfs.customtransfer.tenpak.path "$TRASH/agent-wrapper" &&
	git init -q agentrepo &&
	mkdir gen &&
	"$TP_GEN" model gen/base.safetensors 17 &&
	"$TP_GEN" model gen/ft.safetensors 17 --finetune 18 &&
	oid_of gen/base.safetensors >base_oid &&
	oid_of gen/ft.safetensors >ft_oid
'

# push_finetune REPO HF_HOME: REPO/finetuned holds the fine-tune, its
# config.json naming acme/base, pushed with HF_HOME; the agent's log in
# REPO.log.
push_finetune() {
	new_repo "$1" &&
	mkdir -p "$1/finetuned" &&
	cp gen/ft.safetensors "$1/finetuned/model.safetensors" &&
	printf "{\"_name_or_path\": \"acme/base\"}\n" >"$1/finetuned/config.json" &&
	: >agent.log &&
	(cd "$1" && git add . && git commit -qm ft && HF_HOME="$2" TENPAK_TRACE=1 git push -q origin main) &&
	mv agent.log "$1.log"
}

test_expect_success 'a tampered HF cache blob is not used; the store has the base' '
	use_store s-tampered &&
	new_repo basepush &&
	cp gen/base.safetensors basepush/model.safetensors &&
	(cd basepush && git add . && git commit -qm base && git push -q origin main) &&
	blob=$(hf_cache "$TRASH/hf-bad" acme/base gen/base.safetensors) &&
	damage "$blob" &&
	push_finetune tampered "$TRASH/hf-bad" &&
	grep -q "not using $blob for object $(cat base_oid): its bytes hash to" tampered.log &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$(cat ft_oid)")")" = 2 &&
	git clone -q tampered.git tampered-clone &&
	cmp gen/ft.safetensors tampered-clone/finetuned/model.safetensors
'

test_expect_success 'a tampered HF cache blob, the base nowhere else: stored whole' '
	use_store s-alone &&
	push_finetune alone "$TRASH/hf-bad" &&
	test ! -e "$(store_object "$TENPAK_STORE" "$(cat base_oid)")" &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$(cat ft_oid)")")" = 3 &&
	git clone -q alone.git alone-clone &&
	cmp gen/ft.safetensors alone-clone/finetuned/model.safetensors
'

test_expect_success 'a good HF cache blob is used, and hashed once per agent' '
	use_store s-good &&
	blob=$(hf_cache "$TRASH/hf-good" acme/base gen/base.safetensors) &&
	"$TP_GEN" model gen/ft2.safetensors 17 --finetune 19 &&
	new_repo good &&
	mkdir -p good/ft1 good/ft2 &&
	cp gen/ft.safetensors good/ft1/model.safetensors &&
	cp gen/ft2.safetensors good/ft2/model.safetensors &&
	for d in ft1 ft2; do
		printf "{\"_name_or_path\": \"acme/base\"}\n" >good/$d/config.json || return 1
	done &&
	: >agent.log &&
	(cd good && git config lfs.concurrenttransfers 1 && git add . && git commit -qm fts &&
	 HF_HOME="$TRASH/hf-good" TENPAK_TRACE=1 git push -q origin main) &&
	mv agent.log good.log &&
	! grep -q "not using" good.log &&
	test "$(grep -c "hashed $blob" good.log)" = 1 &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$(cat ft_oid)")")" = 2 &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$(oid_of gen/ft2.safetensors)")")" = 2 &&
	git clone -q good.git good-clone &&
	cmp gen/ft.safetensors good-clone/ft1/model.safetensors &&
	cmp gen/ft2.safetensors good-clone/ft2/model.safetensors
'

test_expect_success 'a damaged copy in .git/lfs/objects is not used' '
	use_store s-lfs &&
	new_repo lfs &&
	cp gen/base.safetensors lfs/model.safetensors &&
	(cd lfs && git add . && git commit -qm base && git push -q origin main) &&
	local=lfs/.git/lfs/objects/$(cut -c1-2 base_oid)/$(cut -c3-4 base_oid)/$(cat base_oid) &&
	damage "$local" &&
	cp gen/ft.safetensors lfs/model.safetensors &&
	: >agent.log &&
	(cd lfs && git commit -qam ft && git push -q origin main) &&
	grep -q "not using $TRASH/$local for object $(cat base_oid): its bytes hash to" agent.log &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$(cat ft_oid)")")" = 2 &&
	git clone -q lfs.git lfs-clone &&
	cmp gen/ft.safetensors lfs-clone/model.safetensors
'

# A download reads a local base once: the object rebuilt from it is hashed
# against its oid, so the base is not hashed first. When that check fails,
# the local copies are hashed, the bad one refused and the store used.
test_expect_success 'a pull uses the base in .git/lfs/objects unhashed, once' '
	use_store s-lfs &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q lfs.git lfs-pull &&
	local=lfs-pull/.git/lfs/objects/$(cut -c1-2 base_oid)/$(cut -c3-4 base_oid)/$(cat base_oid) &&
	mkdir -p "$(dirname "$local")" &&
	cp gen/base.safetensors "$local" &&
	: >agent.log &&
	(cd lfs-pull && TENPAK_TRACE=1 git lfs pull) &&
	cmp gen/ft.safetensors lfs-pull/model.safetensors &&
	grep -q "local copy $TRASH/$local, checked by what is rebuilt from it" agent.log &&
	! grep -q "hashed $TRASH/$local" agent.log &&
	! grep -q "not using" agent.log
'

test_expect_success 'a pull with a damaged base in .git/lfs/objects: refused, store used' '
	use_store s-lfs &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q lfs.git lfs-pull-bad &&
	local=lfs-pull-bad/.git/lfs/objects/$(cut -c1-2 base_oid)/$(cut -c3-4 base_oid)/$(cat base_oid) &&
	mkdir -p "$(dirname "$local")" &&
	cp gen/base.safetensors "$local" &&
	damage "$local" &&
	: >agent.log &&
	(cd lfs-pull-bad && git lfs pull) &&
	cmp gen/ft.safetensors lfs-pull-bad/model.safetensors &&
	grep -q "$(cat ft_oid).*hashing the local copies it used and rebuilding again" agent.log &&
	grep -q "not using $TRASH/$local for object $(cat base_oid): its bytes hash to" agent.log &&
	test -z "$(ls lfs-pull-bad/.git/lfs/tmp)"
'

test_expect_success 'a download ignores a tampered HF cache blob and uses the store' '
	use_store s-tampered &&
	: >agent.log &&
	HF_HOME="$TRASH/hf-bad" git clone -q tampered.git tampered-clone2 &&
	grep -q "not using .*/blobs/$(cat base_oid) for object $(cat base_oid)" agent.log &&
	cmp gen/ft.safetensors tampered-clone2/finetuned/model.safetensors
'

test_expect_success 'an upload whose file is not its announced size is refused' '
	use_store s-size &&
	cp gen/ft.safetensors agentrepo/ft.safetensors &&
	oid=$(cat ft_oid) && size=$(wc -c <gen/ft.safetensors) &&
	request upload "$oid" $((size + 1)) "$TRASH/agentrepo/ft.safetensors" &&
	agent &&
	grep -q "\"oid\":\"$oid\",\"error\":{\"code\":422,\"message\":\"object $oid: .* is $size bytes" out &&
	test ! -e "$(store_object "$TENPAK_STORE" "$oid")"
'

test_expect_success 'a manifest naming one base twice is refused, naming it' '
	use_store s-tampered &&
	obj=$(store_object "$TENPAK_STORE" "$(cat ft_oid)") &&
	cp "$obj" ft-object &&
	rewrite_manifest "$obj" "s/(\"bases\":\\[)(\\{[^}]*\\})/\$1\$2,\$2/" &&
	test_must_fail git clone -q tampered.git twice 2>err &&
	grep -q "base $(cat base_oid) is listed twice" err &&
	cp ft-object "$obj"
'

test_expect_success 'a base claiming 2 GiB is refused before anything is written' '
	use_store s-tampered &&
	fake=$(echo fake | sha256sum | cut -d" " -f1) &&
	head -c 2147483648 /dev/zero | zstd -3 -q -c | put_whole "$TENPAK_STORE" "$fake" 2147483648 &&
	test "$(wc -c <"$(store_object "$TENPAK_STORE" "$fake")")" -lt 100000 &&
	obj=$(store_object "$TENPAK_STORE" "$(cat ft_oid)") &&
	rewrite_manifest "$obj" "s/\"oid\":\"$(cat base_oid)\",\"size\":[0-9]*/\"oid\":\"$fake\",\"size\":2147483648/" &&
	request download "$(cat ft_oid)" "$(wc -c <gen/ft.safetensors)" &&
	(ulimit -f 400000 && agent) &&
	cp ft-object "$obj" &&
	grep -q "\"oid\":\"$(cat ft_oid)\",\"error\":.*claim 2.00 GiB, more than tenpak.rebuildfactor" out &&
	test -z "$(find agentrepo/.git/lfs/tmp -type f)"
'

test_expect_success 'an object larger than the free scratch space is refused before writing' '
	use_store s-space &&
	oid=$(echo huge | sha256sum | cut -d" " -f1) &&
	printf "small" | zstd -q -c | put_whole "$TENPAK_STORE" "$oid" 1125899906842624 &&
	request download "$oid" 1125899906842624 &&
	agent &&
	grep -q "\"oid\":\"$oid\",\"error\":.*needs 1024.00 TiB of scratch space" out &&
	test -z "$(find agentrepo/.git/lfs/tmp -type f)"
'

test_expect_success 'tenpak.verify=required refuses an object stored without a manifest' '
	use_store s-required &&
	"$TENPAK" key generate --out "$TRASH/key" >pub 2>/dev/null &&
	new_repo req &&
	gen_bytes req/data.bin 100000 7 &&
	(cd req && git add . && git commit -qm data && git push -q origin main) &&
	oid=$(oid_of req/data.bin) &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$oid")")" = 1 &&
	git clone -q req.git req-plain &&
	git config --global tenpak.verify required &&
	git config --global tenpak.trustedkeys "$(cat pub)" &&
	test_must_fail git clone -q req.git req-refused 2>err &&
	grep -q "object $oid is stored whole (zstd) without a manifest" err &&
	test_must_fail "$TENPAK" store fsck >fsck.txt &&
	grep -q "^$oid: .*without a manifest.*tenpak.verify is required" fsck.txt &&
	git config --global --unset tenpak.verify &&
	git config --global --unset tenpak.trustedkeys
'

test_expect_success 'with a signing key, other files get a signed manifest and pass required' '
	use_store s-signed &&
	new_repo sreq &&
	gen_bytes sreq/data.bin 100000 8 &&
	(cd sreq && git config tenpak.signingkey "$TRASH/key" &&
	 git add . && git commit -qm data && git push -q origin main) &&
	oid=$(oid_of sreq/data.bin) &&
	test "$(kind_of "$(store_object "$TENPAK_STORE" "$oid")")" = 3 &&
	git config --global tenpak.verify required &&
	git config --global tenpak.trustedkeys "$(cat pub)" &&
	git clone -q sreq.git sreq-clone &&
	cmp sreq/data.bin sreq-clone/data.bin &&
	"$TENPAK" store fsck | grep -q "^$oid: ok, whole-codec, depth 0, signed, trusted" &&
	git config --global --unset tenpak.verify &&
	git config --global --unset tenpak.trustedkeys
'

if strace -f -o /dev/null true 2>/dev/null; then
test_expect_success 'proving a delta opens no /dev/null for writing' '
	use_store s-strace &&
	cp gen/ft.safetensors agentrepo/ft.safetensors &&
	oid=$(cat ft_oid) && size=$(wc -c <gen/ft.safetensors) &&
	request upload "$oid" "$size" "$TRASH/agentrepo/ft.safetensors" &&
	# LeakSanitizer cannot run under ptrace (sanitizer builds).
	agent env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		strace -f -e trace=open,openat,creat -o "$TRASH/trace" &&
	grep -q "{\"event\":\"complete\",\"oid\":\"$oid\"}" out &&
	test -e "$(store_object "$TENPAK_STORE" "$oid")" &&
	! grep "/dev/null" trace | grep -q -e O_CREAT -e O_WRONLY -e creat
'
else
	echo "ok - # skip proving a delta opens no /dev/null (strace cannot run here)"
fi

test_done
