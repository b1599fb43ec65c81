#!/bin/sh
# The agent spoken to directly, as git-lfs would, including hostile input.
. "$(dirname "$0")/lib.sh"

export TENPAK_STORE="$TRASH/store"
ZERO=0000000000000000000000000000000000000000000000000000000000000000

test_expect_success 'setup: a repository and two files' '
	git init -q repo &&
	gen_bytes repo/a.bin 2500000 1 &&
	gen_bytes repo/b.bin 10 2 &&
	oid_of repo/a.bin >oid_a &&
	oid_of repo/b.bin >oid_b
'

# agent INPUT-FILE: run the agent in repo/, replies in out, log in err.
agent() {
	(cd "$TRASH/repo" && "$TENPAK" agent <"$TRASH/$1" >"$TRASH/out" 2>"$TRASH/err")
}

only_json_lines() {
	test -f "$TRASH/out" &&
	! grep -v "^{.*}$" "$TRASH/out"
}

test_expect_success 'upload: progress then complete, and skip when stored' '
	a=$(cat oid_a) && b=$(cat oid_b) &&
	cat >in <<-EOF &&
	{"event":"init","operation":"upload","remote":"origin","concurrent":true,"concurrenttransfers":8}
	{"event":"upload","oid":"$a","size":2500000,"path":"$TRASH/repo/a.bin","action":null}
	{"event":"upload","oid":"$b","size":10,"path":"$TRASH/repo/b.bin","action":null}
	{"event":"upload","oid":"$a","size":2500000,"path":"$TRASH/repo/a.bin","action":null}
	{"event":"terminate"}
	EOF
	agent in &&
	only_json_lines &&
	test "$(sed -n 1p out)" = "{}" &&
	grep -q "\"event\":\"progress\",\"oid\":\"$a\",\"bytesSoFar\":1048576," out &&
	test "$(grep -c "{\"event\":\"complete\",\"oid\":\"$a\"}" out)" = 2 &&
	grep -q "{\"event\":\"complete\",\"oid\":\"$b\"}" out &&
	test "$(count_objects "$TRASH/store")" = 2
'

test_expect_success 'upload of content that does not match its oid is refused' '
	cat >in <<-EOF &&
	{"event":"init","operation":"upload","remote":"origin"}
	{"event":"upload","oid":"$ZERO","size":10,"path":"$TRASH/repo/b.bin"}
	{"event":"upload","oid":"$(cat oid_b)","size":11,"path":"$TRASH/repo/b.bin"}
	{"event":"upload","oid":"$(cat oid_b)","size":10,"path":"$TRASH/repo/b.bin"}
	EOF
	agent in &&
	only_json_lines &&
	grep -q "\"oid\":\"$ZERO\",\"error\":{\"code\":422" out &&
	test ! -e "$(store_object "$TRASH/store" $ZERO)" &&
	test "$(grep -c "\"error\"" out)" = 2 &&
	grep -q "{\"event\":\"complete\",\"oid\":\"$(cat oid_b)\"}" out
'

test_expect_success 'download: a verified file under lfs/tmp' '
	a=$(cat oid_a) &&
	cat >in <<-EOF &&
	{"event":"init","operation":"download","remote":"origin","concurrent":false}
	{"event":"download","oid":"$a","size":2500000,"action":null}
	{"event":"download","oid":"$ZERO","size":5}
	{"event":"terminate"}
	EOF
	agent in &&
	only_json_lines &&
	path=$(grep "\"event\":\"complete\",\"oid\":\"$a\"" out | sed "s/.*\"path\":\"\([^\"]*\)\".*/\1/") &&
	case "$path" in "$TRASH/repo/.git/lfs/tmp/"*) ;; *) echo "bad path $path"; exit 1;; esac &&
	cmp "$path" repo/a.bin &&
	grep -q "\"oid\":\"$ZERO\",\"error\":{\"code\":404" out &&
	test "$(ls repo/.git/lfs/tmp | wc -l)" = 1
'

test_expect_success 'a bad request for a known oid is answered; serving goes on' '
	b=$(cat oid_b) &&
	cat >in <<-EOF &&
	{"event":"init","operation":"download"}
	{"event":"download","oid":"$b","size":-1}
	{"event":"upload","oid":"$b","size":10,"path":"$TRASH/repo/b.bin"}
	{"event":"download","oid":"$b","size":10}
	EOF
	agent in &&
	only_json_lines &&
	grep -q "\"oid\":\"$b\",\"error\":{\"code\":400" out &&
	test "$(grep -c "\"error\"" out)" = 2 &&
	grep -q "\"oid\":\"$b\",\"path\":" out
'

test_expect_success 'an oid that is not 64 lowercase hex ends the agent' '
	for oid in ../../etc/passwd $(cat oid_b | tr a-f A-F) "$(cat oid_b)/x"; do
		printf "{\"event\":\"init\",\"operation\":\"download\"}\n" >in &&
		printf "{\"event\":\"download\",\"oid\":\"%s\",\"size\":1}\n" "$oid" >>in &&
		test_must_fail agent in &&
		test "$(cat out)" = "{}" &&
		grep -q "not 64 lowercase hex" err || exit 1
	done &&
	test -z "$(find "$TRASH" -name passwd)"
'

test_expect_success 'garbage before init or a second init ends the agent cleanly' '
	printf "this is not json\n" >in &&
	test_must_fail agent in &&
	test ! -s out &&
	grep -q "not valid JSON" err &&
	printf "{\"event\":\"download\",\"oid\":\"%s\",\"size\":1}\n" $ZERO >in &&
	test_must_fail agent in &&
	grep -q "before init" err &&
	printf "{\"event\":\"init\",\"operation\":\"upload\"}\n{\"event\":\"init\",\"operation\":\"upload\"}\n" >in &&
	test_must_fail agent in &&
	grep -q "second init" err
'

test_expect_success 'an over-long line is refused without a crash' '
	{ printf "{\"event\":\"init\",\"operation\":\"upload\"}\n" &&
	  "$TP_GEN" bytes 1200000 5 | od -An -tx1 | tr -d " \n" | head -c 2000000 &&
	  printf "\n"; } >in &&
	test_must_fail agent in &&
	grep -q "longer than" err &&
	test "$(cat out)" = "{}"
'

test_expect_success 'end of input without terminate is a clean exit' '
	printf "{\"event\":\"init\",\"operation\":\"upload\"}\n" >in &&
	agent in &&
	test "$(cat out)" = "{}"
'

# git-lfs starts several agents and gives most of them nothing: init opens
# nothing, the first object opens the store, and a bad one fails each.
test_expect_success 'a bad store fails each object, not an agent that gets none' '
	printf "{\"event\":\"init\",\"operation\":\"upload\"}\n{\"event\":\"terminate\"}\n" >in &&
	TENPAK_STORE=relative agent in &&
	test "$(cat out)" = "{}" &&
	b=$(cat oid_b) &&
	cat >in <<-EOF &&
	{"event":"init","operation":"upload"}
	{"event":"upload","oid":"$b","size":10,"path":"$TRASH/repo/b.bin"}
	{"event":"upload","oid":"$b","size":10,"path":"$TRASH/repo/b.bin"}
	{"event":"terminate"}
	EOF
	TENPAK_STORE=relative agent in &&
	only_json_lines &&
	test "$(grep -c "\"oid\":\"$b\",\"error\":{\"code\":[0-9]*,\"message\":\".*relative" out)" = 2
'

test_done
