#!/bin/sh
# `tenpak delta compress|apply -o OUT` replaces a regular file whole (temp
# file, rename) but never replaces what is not a regular file: a device, a
# FIFO or stdout is written in place, and a symlink is written through.
# The real /dev/null is never touched: the device is made in $TRASH.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib.sh"

DATA="$ROOT/tests/data/fixtures"
BASE="$DATA/base-bf16.safetensors"
FT="$DATA/full_ft-bf16.safetensors"

# start_reader FIFO OUT: copy FIFO to OUT in the background, pid in
# reader_pid. The timeout frees it when no writer ever comes (a FIFO that
# was replaced by a file can no longer be opened by anyone).
start_reader() {
	timeout 20 cat "$1" >"$2" </dev/null &
	reader_pid=$!
}

test_expect_success 'setup: a delta of the fixture fine-tune' '
	"$TENPAK" delta compress --base "$BASE" "$FT" -o ft.tpd
'

test_expect_success 'apply -o FIFO: written in place, the reader gets the file' '
	mkfifo fifo &&
	start_reader fifo fifo.out &&
	timeout 20 "$TENPAK" delta apply --base "$BASE" ft.tpd -o fifo &&
	wait "$reader_pid" &&
	test -p fifo &&
	cmp fifo.out "$FT"
'

test_expect_success 'compress -o FIFO: the reader gets a delta that applies' '
	start_reader fifo fifo.tpd &&
	timeout 20 "$TENPAK" delta compress --base "$BASE" "$FT" -o fifo &&
	wait "$reader_pid" &&
	test -p fifo &&
	"$TENPAK" delta apply --base "$BASE" fifo.tpd -o from-fifo &&
	cmp from-fifo "$FT"
'

test_expect_success 'apply -o -: the file on stdout, nothing else' '
	"$TENPAK" delta apply --base "$BASE" ft.tpd -o - >stdout.out 2>stderr.out &&
	cmp stdout.out "$FT" &&
	grep -q "^applied " stderr.out &&
	test ! -e ./-
'

test_expect_success 'compress -o -: a delta on stdout that applies' '
	"$TENPAK" delta compress --base "$BASE" "$FT" -o - >stdout.tpd 2>stderr.out &&
	grep -q "^compressed " stderr.out &&
	"$TENPAK" delta apply --base "$BASE" stdout.tpd -o from-stdout &&
	cmp from-stdout "$FT" &&
	test ! -e ./-
'

test_expect_success 'a symlink to a file is written through and kept' '
	echo old >target &&
	ln -s target link &&
	"$TENPAK" delta apply --base "$BASE" ft.tpd -o link &&
	test -h link &&
	cmp target "$FT"
'

test_expect_success 'a symlink to nothing is refused, not replaced' '
	ln -s nowhere dangling &&
	test_must_fail "$TENPAK" delta apply --base "$BASE" ft.tpd -o dangling 2>err &&
	grep -q "dangling is a symbolic link to nothing" err &&
	test -h dangling &&
	test ! -e nowhere
'

test_expect_success 'a regular file is still replaced whole' '
	echo old >plain &&
	"$TENPAK" delta apply --base "$BASE" ft.tpd -o plain &&
	cmp plain "$FT" &&
	test -z "$(ls | grep "\.tmp\.")"
'

# A character device like /dev/null, made here; needs CAP_MKNOD.
if mknod "$TRASH/null" c 1 3 2>/dev/null; then
	test_expect_success 'apply and compress -o DEVICE: it stays a device' '
		"$TENPAK" delta apply --base "$BASE" ft.tpd -o null &&
		test -c null &&
		"$TENPAK" delta compress --base "$BASE" "$FT" -o null &&
		test -c null &&
		ln -s null null-link &&
		"$TENPAK" delta apply --base "$BASE" ft.tpd -o null-link &&
		test -h null-link && test -c null
	'
	can_mknod=yes
else
	echo "# mknod is not permitted here: the device test does not run"
	can_mknod=no
fi

# The device case is the point of this script: without it, report a skip.
if [ "$can_mknod" = no ] && [ "$test_failed" -eq 0 ]; then
	echo "$test_count passed, 1 skipped"
	rm -rf "$TRASH"
	exit 77
fi
test_done
