#!/bin/sh
# Advice on push with the real optimizer on the fixture model: report mode
# writes the reports locally and in the store (read back by 'tenpak report'
# from another clone), enforce refuses a push under impossible constraints
# and lets it go under loose ones, background returns at once and the
# report appears later, and a model being optimized is not started twice.
DATA=$(cd "$(dirname "$0")/../data" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# The hook runs 'tenpak optimize --quick --budget --report --plot' and the
# constraint flags, which came with the optimizer's selection work. (Checked
# before lib.sh, which makes the trash directory.)
if ! "${TENPAK:?}" optimize --help | grep -q -e "--quick"; then
	echo "1..0 # SKIP tenpak optimize has no --quick yet"
	exit 77
fi
command -v python3 >/dev/null || { echo "1..0 # SKIP no python3"; exit 77; }
command -v flock >/dev/null || { echo "1..0 # SKIP no flock"; exit 77; }
. "$(dirname "$0")/lib.sh"

STORE="$TRASH/store"

# report_dir: where the hook writes the reports of model/ at HEAD.
report_dir() {
	echo "$TRASH/work/.git/tenpak/reports/$(git -C "$TRASH/work" rev-parse HEAD)/model"
}

# wait_for FILE: wait (up to 10 minutes) until FILE exists.
wait_for() {
	wait_for_i=0 &&
	while ! test -f "$1"; do
		wait_for_i=$((wait_for_i + 1)) &&
		test "$wait_for_i" -lt 1200 &&
		sleep 0.5 || { echo "wait_for: no $1"; cat "$TRASH/work/.git/tenpak/reports/background.log"; return 1; }
	done
}

test_expect_success 'setup: the fixture model in a repository with the hook' '
	"$TENPAK" install --remote "$TRASH" --store "$STORE" >/dev/null &&
	new_repo work &&
	cd work &&
	"$TENPAK" hooks install >/dev/null &&
	mkdir model &&
	cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
	cp "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors &&
	git add model &&
	git commit -qm "the model" &&
	git config tenpak.optimize.candidates rtn4_g128 &&
	git config tenpak.optimize.max-tokens 256 &&
	git config tenpak.optimize.ctx 128 &&
	git config tenpak.optimize.threads 2 &&
	git config tenpak.optimize.onpush report
'

test_expect_success 'report: a summary on push, reports in the git dir and the store' '
	cd work &&
	git push -q origin main 2>err &&
	grep -q "^tenpak: optimizing model (1 weight file, commit" err &&
	grep -q "^  rtn4_g128 " err &&
	grep -q "^  winner: rtn4_g128" err &&
	d=$(report_dir) &&
	test -s "$d/report.json" && test -s "$d/report.md" && test -s "$d/report.svg" &&
	grep -q "<svg" "$d/report.svg" &&
	oid=$(oid_of model/model.safetensors) &&
	test -f "$(store_object "$STORE" "$oid")" &&
	cmp "$d/report.json" "$STORE/reports/$oid.json" &&
	json_true "d[\"pushed\"][\"commit\"] == \"$(git rev-parse HEAD)\" and d[\"model\"] == \"model\" and d[\"pushed\"][\"files\"][0][\"oid\"] == \"$oid\" and [c[\"codec\"] for c in d[\"all_candidates\"]] == [\"rtn4_g128\"]" <"$d/report.json" &&
	test "$(git -C ../work.git rev-parse main)" = "$(git rev-parse HEAD)"
'

test_expect_success 'tenpak report reads it back from another clone, by path and by oid' '
	git clone -q work.git clone &&
	cd clone &&
	oid=$(oid_of model/model.safetensors) &&
	"$TENPAK" report model >out &&
	grep -q "^report for model (reports/$oid.json in $STORE)$" out &&
	grep -q "^  winner: rtn4_g128" out &&
	"$TENPAK" report model/model.safetensors >out2 &&
	tail -n +2 out >a && tail -n +2 out2 >b &&
	cmp a b &&
	"$TENPAK" report "$oid" --json >json &&
	json_true "d[\"pushed\"][\"files\"][0][\"oid\"] == \"$oid\"" <json &&
	tr -d "\n" <"$STORE/reports/$oid.json" >want &&
	tr -d "\n" <json >got &&
	cmp want got
'

test_expect_success 'enforce: impossible constraints refuse the push, naming the constraint' '
	cd work &&
	git config tenpak.optimize.onpush enforce &&
	git config tenpak.optimize.min-compression 1000 &&
	cp "$DATA/fixtures/full_ft-bf16.safetensors" model/model.safetensors &&
	git commit -qam "fine-tuned" &&
	test_must_fail git push -q origin main 2>err &&
	grep -q "^tenpak: push refused: no candidate for model meets" err &&
	grep -qi "compression" err &&
	test "$(git -C ../work.git rev-parse main)" != "$(git rev-parse HEAD)" &&
	test -s "$(report_dir)/report.json"
'

test_expect_success 'enforce: loose constraints let the push go' '
	cd work &&
	git config tenpak.optimize.min-compression 1.5 &&
	git push -q origin main 2>err &&
	grep -q "^  winner: rtn4_g128" err &&
	test "$(git -C ../work.git rev-parse main)" = "$(git rev-parse HEAD)"
'

test_expect_success 'background: the push returns at once, the report appears later' '
	cd work &&
	git config --unset tenpak.optimize.min-compression &&
	git config tenpak.optimize.onpush background &&
	cp "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors &&
	git commit -qam "back to base" &&
	git push -q origin main 2>err &&
	grep -q "^tenpak: optimizing 1 model in the background" err &&
	test_must_fail grep -q "^  winner:" err &&
	test "$(git -C ../work.git rev-parse main)" = "$(git rev-parse HEAD)" &&
	wait_for "$(report_dir)/report.json" &&
	wait_for "$STORE/reports/$(oid_of model/model.safetensors).json" &&
	grep -q "^  winner: rtn4_g128" .git/tenpak/reports/background.log
'

test_expect_success 'background: a model still being optimized is not started twice' '
	cd work &&
	cp "$DATA/fixtures/full_ft-bf16.safetensors" model/model.safetensors &&
	git commit -qam "fine-tuned again" &&
	lock=.git/tenpak/locks/$(oid_of model/model.safetensors).lock &&
	flock "$lock" git push -q origin main 2>err &&
	grep -q "^tenpak: model is being optimized by an earlier push already" err &&
	test_must_fail grep -q "in the background" err &&
	test ! -e "$(report_dir)" &&
	test "$(git -C ../work.git rev-parse main)" = "$(git rev-parse HEAD)"
'

BUCKET=tenpak-test
stop_server() {
	[ -f "$TRASH/s3.pid" ] || return 0
	stop_server_pid=$(cat "$TRASH/s3.pid") &&
	{ kill "$stop_server_pid" 2>/dev/null || true; } &&
	while kill -0 "$stop_server_pid" 2>/dev/null; do sleep 0.1; done
}
trap stop_server EXIT

test_expect_success 'report: with an S3 store the report goes to the bucket' '
	s3=$(sh "$ROOT/scripts/s3rver.sh" start "$TRASH/s3data" "$BUCKET") &&
	set -- $s3 &&
	echo "$1" >"$TRASH/s3.pid" &&
	export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER &&
	cd work &&
	git config tenpak.store "s3://$BUCKET/team" &&
	git config tenpak.s3.endpoint "http://127.0.0.1:$2" &&
	git config tenpak.optimize.onpush report &&
	cp "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors &&
	git commit -qam "base, to S3" &&
	git push -q origin main 2>err &&
	grep -q "^  stored:  reports/.* in s3://$BUCKET/team$" err &&
	oid=$(oid_of model/model.safetensors) &&
	find "$TRASH/s3data/$BUCKET" -path "*team/reports/$oid.json*" >found &&
	test -s found &&
	"$TENPAK" report model --json >json &&
	json_true "d[\"pushed\"][\"commit\"] == \"$(git rev-parse HEAD)\"" <json &&
	stop_server
'

test_done
