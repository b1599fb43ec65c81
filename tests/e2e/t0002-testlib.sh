#!/bin/sh
# The test library itself: a body fails when any command in it fails, the
# chain lint rejects bodies that could lose a failure, lib.sh's helpers fail
# when a step inside them fails, and good bodies pass. Each case is a small
# test script that sources lib.sh; its output and exit status are checked.
LIB="$(cd "$(dirname "$0")" && pwd)/lib.sh"
. "$(dirname "$0")/lib.sh"

# The scripts' own trash directories go under ours, so they go with it.
mkdir "$TRASH/tmp" || exit 1
export TMPDIR="$TRASH/tmp"

# script NAME: $TRASH/NAME.sh, made of lib.sh, the tests on stdin, test_done.
script() {
	{ echo ". \"$LIB\"" && cat && echo test_done; } >"$TRASH/$1.sh"
}

script runner <<\EOF
test_expect_success 'false then true' '
	false; true; echo reached-after-false
'
test_expect_success 'a failing command in the middle' '
	true
	false
	true
'
helper() {
	false
	true
}
test_expect_success 'a helper whose middle command fails' '
	true && helper
'
test_expect_success 'exit 1 from a loop' '
	for i in 1 2; do test $i = 2 || exit 1; done
'
test_expect_success 'a failing command substitution' '
	x=$(false)
	true
'
EOF

script lint <<\EOF
test_expect_success 'broken top-level chain' '
	true &&
	false
	true
'
test_expect_success 'false && true in a loop' '
	for i in 1 2; do false && true; done &&
	true
'
test_expect_success 'a failure in an early iteration' '
	echo x >present &&
	for f in missing present; do cat "$f" && true; done
'
test_expect_success 'two commands in a loop body' '
	for i in 1 2; do false; true || return 1; done
'
test_expect_success 'broken chain in a subshell' '
	(false; true) &&
	true
'
test_expect_success 'broken chain in an if branch' '
	if true; then false; true; else true; fi &&
	true
'
test_expect_success 'an ungrouped || at the top level' '
	true &&
	test -d nowhere || test -d . &&
	true
'
test_expect_success 'a syntax error' '
	if true; then true
'
EOF

script helpers <<\EOF
test_expect_success 'new_repo when DIR.git cannot be made' '
	: >r.git &&
	new_repo r &&
	true
'
test_expect_success 'oid_of a missing file' '
	oid=$(oid_of missing) &&
	true
'
test_expect_success 'store_object of an empty oid' '
	store_object "$TRASH/store" "" >/dev/null &&
	true
'
test_expect_success 'push_all with one failing push' '
	new_repo p1 && new_repo p2 &&
	rm -rf p2.git &&
	push_all p1 p2 &&
	true
'
test_expect_success 'test_must_fail of a missing command' '
	test_must_fail no-such-command-tenpak-test &&
	true
'
test_expect_success 'test_must_fail of a command killed by a signal' '
	test_must_fail sh -c "kill -9 \$\$" &&
	true
'
test_expect_success 'test_must_fail of a command that works' '
	test_must_fail true &&
	true
'
EOF

script good <<\EOF
test_expect_success 'loops, nesting, here-documents, case, if' '
	# a comment; with ( a paren
	cat >in <<-END &&
	not; a (chain; done
	END
	for i in 1 2; do
		for j in a b; do
			echo "$i$j" >>seen || return 1
		done &&
		test "$(sed -n ${i}p in)" = "not; a (chain; done" ||
		test $i = 2 ||
		exit 1
	done &&
	test "$(wc -l <seen)" -eq $((2 * 2)) &&
	while read -r line; do
		case "$line" in *chain*) echo found; break ;; *) exit 1 ;; esac || exit 1
	done <in >found &&
	grep -q found found &&
	if test -f in; then echo yes >if; else echo no >if; fi &&
	test "$(cat if)" = yes &&
	(cd "$TRASH" && test -f in) &&
	{ test -f in || { echo "in is gone"; exit 1; }; }
'
test_expect_success 'helpers do their job' '
	new_repo r &&
	test -d r.git && test -d r/.git &&
	oid=$(oid_of r/.gitattributes) &&
	test "$oid" = "$(sha256sum r/.gitattributes | cut -d" " -f1)" &&
	test "$(store_object /s "$oid")" = "/s/objects/$(echo "$oid" | cut -c1-2)/$(echo "$oid" | cut -c3-4)/$oid" &&
	test "$(count_objects "$TRASH/nostore")" = 0 &&
	push_all r &&
	git -C r.git rev-parse --verify -q main &&
	test_must_fail false &&
	test_must_fail sh -c "exit 3"
'
EOF

script guard <<\EOF
test_expect_success 'a runner called from an && list' '
	true
' && true
EOF

test_expect_success 'the runner fails a body at its first failing command' '
	test_must_fail env TEST_CHAIN_LINT=0 sh runner.sh >out &&
	cat out &&
	grep -q "^not ok 1 - false then true$" out &&
	! grep -q reached-after-false out &&
	grep -q "^not ok 2 - a failing command in the middle$" out &&
	grep -q "^not ok 3 - a helper whose middle command fails$" out &&
	grep -q "^not ok 4 - exit 1 from a loop$" out &&
	grep -q "^not ok 5 - a failing command substitution$" out &&
	grep -q "^0 passed, 5 failed$" out
'

test_expect_success 'with the lint on, the same bodies fail too' '
	test_must_fail sh runner.sh >out &&
	cat out &&
	grep -q "^0 passed, 5 failed$" out
'

test_expect_success 'the chain lint rejects each body that could lose a failure' '
	test_must_fail sh lint.sh >out &&
	cat out &&
	grep -q "^0 passed, 8 failed$" out &&
	for n in 1 2 3 4 5 6 7 8; do
		sed -n "/^not ok $n - /{n;p;}" out >why &&
		grep -q "^#   chain-lint: " why || return 1
	done &&
	sed -n "/^not ok 1 - /{n;p;}" out | grep -q "outside the && chain" &&
	sed -n "/^not ok 2 - /{n;p;}" out | grep -q "loop body must end in" &&
	sed -n "/^not ok 3 - /{n;p;}" out | grep -q "line 3: a loop body must end in" &&
	sed -n "/^not ok 4 - /{n;p;}" out | grep -q "in a loop body" &&
	sed -n "/^not ok 5 - /{n;p;}" out | grep -q "in a subshell" &&
	sed -n "/^not ok 6 - /{n;p;}" out | grep -q "in an if branch" &&
	sed -n "/^not ok 7 - /{n;p;}" out | grep -q "outside the && chain" &&
	sed -n "/^not ok 8 - /,\$p" out | grep -q "exited 2"
'

test_expect_success 'lib.sh helpers fail when a step inside them fails' '
	test_must_fail sh helpers.sh >out &&
	cat out &&
	grep -q "^0 passed, 7 failed$" out &&
	grep -q "push_all: push of p2 failed" out &&
	grep -q "command not found" out &&
	grep -q "died of signal 9" out &&
	grep -q "succeeded" out
'

test_expect_success 'good bodies pass the lint and the runner' '
	sh good.sh >out &&
	cat out &&
	grep -q "^ok 1 - " out &&
	grep -q "^ok 2 - " out &&
	grep -q "^2 passed, 0 failed$" out
'

test_expect_success 'a runner whose set -e would be ignored bails out' '
	test_must_fail sh guard.sh >out &&
	cat out &&
	grep -q "^Bail out! " out &&
	! grep -q "^ok" out
'

test_done
