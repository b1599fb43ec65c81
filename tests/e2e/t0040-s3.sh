#!/bin/sh
# tenpak on a real S3-compatible server (s3rver over HTTP on 127.0.0.1):
# push and clone, multipart uploads, failures, and concurrent agents.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib.sh"

BUCKET=tenpak-test
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
unset AWS_SESSION_TOKEN AWS_PROFILE

# start_server [PORT]
start_server() {
	start_server_out=$(sh "$ROOT/scripts/s3rver.sh" start "$TRASH/s3data" "$BUCKET" "$@") &&
	set -- $start_server_out &&
	test $# = 2 &&
	echo "$1" >"$TRASH/s3.pid" &&
	echo "$2" >"$TRASH/s3.port"
}
stop_server() {
	[ -f "$TRASH/s3.pid" ] || return 0
	stop_server_pid=$(cat "$TRASH/s3.pid") &&
	{ kill "$stop_server_pid" 2>/dev/null || true; } &&
	while kill -0 "$stop_server_pid" 2>/dev/null; do sleep 0.1; done
}
trap stop_server EXIT

# start_agent: a tenpak agent in agentrepo/ reading fd 3, answering on fd 4.
start_agent() {
	git init -q agentrepo &&
	mkfifo to_agent from_agent &&
	{ (cd agentrepo && exec "$TENPAK" agent <../to_agent >../from_agent 2>../agent.err) & } &&
	echo $! >agent.pid &&
	exec 3>to_agent 4<from_agent
}

objects_in_bucket() {
	find "$TRASH/s3data/$BUCKET" -name "*._S3rver_object" 2>/dev/null | wc -l
}

test_expect_success 'setup: s3rver running, tenpak pointed at a bucket' '
	start_server &&
	"$TENPAK" install --remote "$TRASH" --store "s3://$BUCKET/team/models" >/dev/null &&
	git config --global tenpak.s3.endpoint "http://127.0.0.1:$(cat s3.port)" &&
	git config --global tenpak.s3.partsize 5M &&
	git config --global tenpak.s3.retries 2
'

test_expect_success 'push and clone through s3://, multipart included' '
	new_repo work &&
	cd work &&
	for i in 1 2 3 4 5 6 7 8 9 10 11; do
		gen_bytes f$i.bin $((i * i * 1000)) $i || exit 1
	done &&
	gen_bytes big.bin 12000000 12 &&
	"$TP_GEN" model model.safetensors 3 &&
	git add . && git commit -qm files &&
	git push -q origin main &&
	cd .. &&
	test "$(objects_in_bucket)" -eq 13 &&
	git clone -q work.git clone &&
	for f in $(cd work && git lfs ls-files -n); do
		cmp work/$f clone/$f || exit 1
	done
'

test_expect_success 'store stats lists the bucket' '
	"$TENPAK" store stats --json >stats &&
	grep -q "\"objects\":13," stats
'

test_expect_success 'pushing again uploads nothing' '
	before=$(find s3data -newer stats -type f | wc -l) &&
	sleep 1 && touch marker &&
	git init -q --bare other.git &&
	(cd work && git push -q ../other.git main) &&
	test -z "$(find s3data -newer marker -name "*._S3rver_object")"
'

test_expect_success 'wrong credentials: a clear error without the secret' '
	cd work &&
	gen_bytes cred.bin 1000 77 &&
	git add cred.bin && git commit -qm cred &&
	test_must_fail env AWS_ACCESS_KEY_ID=NOBODY AWS_SECRET_ACCESS_KEY=TopSecret123 \
		git push -q origin main 2>err &&
	grep -q "access denied" err &&
	! grep -q TopSecret123 err &&
	git push -q origin main
'

test_expect_success 'a missing bucket is named' '
	test_must_fail "$TENPAK" store stats --store "s3://no-such-bucket/x" 2>err &&
	grep -q "bucket \"no-such-bucket\" does not exist" err
'

test_expect_success 'no credentials at all: says how to provide them' '
	test_must_fail env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
		"$TENPAK" store stats 2>err &&
	grep -q "no AWS credentials" err
'

test_expect_success 'server stopped mid-upload: clear error, nothing partial, re-push works' '
	gen_bytes mid.bin 40000000 31 &&
	oid=$(oid_of mid.bin) &&
	start_agent &&
	printf "{\"event\":\"init\",\"operation\":\"upload\"}\n" >&3 &&
	printf "{\"event\":\"upload\",\"oid\":\"%s\",\"size\":40000000,\"path\":\"%s\"}\n" \
		"$oid" "$TRASH/mid.bin" >&3 &&
	read -r line <&4 && test "$line" = "{}" &&
	read -r line <&4 && echo "$line" | grep -q progress &&
	# Freeze the agent while the server goes away, so that the upload
	# cannot win the race on a fast machine.
	kill -STOP "$(cat agent.pid)" &&
	stop_server &&
	kill -CONT "$(cat agent.pid)" &&
	while read -r line <&4; do
		case "$line" in *complete*) break ;; esac || exit 1
	done &&
	echo "$line" | grep -q "\"error\"" &&
	echo "$line" | grep -q "127.0.0.1" &&
	printf "{\"event\":\"terminate\"}\n" >&3 &&
	exec 3>&- 4<&- &&
	wait &&
	test -z "$(find s3data -path "*$oid*" -name "*._S3rver_object")" &&
	start_server "$(cat s3.port)" &&
	cp mid.bin work/ &&
	(cd work && git add mid.bin && git commit -qm mid && git push -q origin main) &&
	test -n "$(find s3data -path "*$oid*" -name "*._S3rver_object")" &&
	git clone -q work.git clone-mid &&
	cmp mid.bin clone-mid/mid.bin
'

test_expect_success '8 concurrent pushes of overlapping objects' '
	before=$(objects_in_bucket) &&
	for r in 1 2 3 4 5 6 7 8; do
		new_repo conc$r &&
		(cd conc$r &&
		 gen_bytes shared.bin 3000000 500 &&
		 gen_bytes own.bin 700000 $((600 + r)) &&
		 gen_bytes pair.bin 1500000 $((700 + r % 2)) &&
		 git add . && git commit -qm c) || exit 1
	done &&
	push_all conc1 conc2 conc3 conc4 conc5 conc6 conc7 conc8 &&
	for r in 1 2 3 4 5 6 7 8; do
		git clone -q conc$r.git conc-clone$r &&
		for f in shared.bin own.bin pair.bin; do
			cmp conc$r/$f conc-clone$r/$f || exit 1
		done || exit 1
	done &&
	test "$(objects_in_bucket)" -eq $((before + 11))
'

stop_server
test_done
