#!/bin/sh
# The command line: help, version, usage errors, install and uninstall.
DATA=$(cd "$(dirname "$0")/../data" && pwd)
. "$(dirname "$0")/lib.sh"

test_expect_success 'version and help' '
	"$TENPAK" --version >out &&
	grep -q "^tenpak [0-9]" out &&
	"$TENPAK" --help >out &&
	grep -q "usage: tenpak" out &&
	for cmd in install uninstall agent store; do
		"$TENPAK" $cmd --help >out &&
		grep -q "usage: tenpak $cmd" out || exit 1
	done
'

test_expect_success 'unknown commands and bad flags exit 2 with one line' '
	for args in "bogus" "--bogus" "install --bogus" "install --store" "install --remote" \
		    "install --remote=" "uninstall --remote" "install --local --global" "agent extra" "store" "store frobnicate" \
		    "uninstall --store=x"; do
		test_expect_code 2 "$TENPAK" $args >out 2>err &&
		test "$(wc -l <err)" = 1 &&
		test ! -s out || { echo "$args:"; cat err; exit 1; }
	done
'

test_expect_success 'eval: --help exits 0, usage errors exit 2 with one line' '
	"$TENPAK" eval --help >out &&
	grep -q "^usage: tenpak eval MODEL_DIR --text FILE" out &&
	"$TENPAK" eval -h >out &&
	grep -q "^usage: tenpak eval" out &&
	test_usage_errors eval eval "" "m" "m n --text t" "m --text" "--bogus" \
		"m --text t --json=1" "m --text t --mode bogus" "m --text t --ctx 2" \
		"m --text t --ctx x" "m --text t --threads 0" "m --text t --stride 0"
'

test_expect_success 'delta: --help exits 0, usage errors exit 2 with one line' '
	"$TENPAK" delta --help >out &&
	grep -q "^usage: tenpak delta <compress|apply|estimate|inspect>" out &&
	for sub in compress apply estimate inspect; do
		"$TENPAK" delta $sub --help >out &&
		grep -q "^usage: tenpak delta $sub" out &&
		"$TENPAK" delta $sub -h >out &&
		grep -q "^usage: tenpak delta $sub" out || exit 1
	done &&
	test_usage_errors delta delta "" "bogus" "--bogus" &&
	test_usage_errors "delta compress" delta "compress" "compress t" "compress t -o" \
		"compress t u -o o" "compress --bogus t -o o" "compress --threads x t -o o" \
		"compress --threads -1 t -o o" "compress --threads 1025 t -o o" \
		"compress --level 0 t -o o" "compress --level 23 t -o o" \
		"compress --chunk-size 17M t -o o" "compress --transform bogus t -o o" \
		"compress --json=1 t -o o" "compress --base" &&
	test_usage_errors "delta apply" delta "apply d" "apply --output" &&
	test_usage_errors "delta estimate" delta "estimate" "estimate t -o o" &&
	test_usage_errors "delta inspect" delta "inspect" "inspect d e" "inspect --base b d" &&
	seq 4097 | sed "s/.*/--base=b/" >many &&
	test_expect_code 2 "$TENPAK" delta compress $(cat many) t -o o 2>err &&
	test "$(wc -l <err)" = 1 &&
	grep -q "too many --base options" err
'

test_expect_success 'delta: --base repeats, sizes take K and M' '
	"$TENPAK" delta compress --chunk-size 64K --base "$DATA/fixtures/base-bf16.safetensors" \
		--base="$DATA/eval/config.json" "$DATA/fixtures/full_ft-bf16.safetensors" \
		-o ft.tpd >out &&
	"$TENPAK" delta inspect ft.tpd >out &&
	grep -q "chunk size 65536," out &&
	grep -q "^base 0: base-bf16.safetensors " out &&
	grep -q "^base 1: config.json " out &&
	"$TENPAK" delta apply --base "$DATA/eval/config.json" \
		--base "$DATA/fixtures/base-bf16.safetensors" ft.tpd -o ft &&
	cmp ft "$DATA/fixtures/full_ft-bf16.safetensors"
'

# The in-repo fixture: config and tokenizer from tests/data/eval, BF16
# weights; PyTorch gives perplexity 10.108377 (runtime/README.md).
test_expect_success 'eval scores the fixture model' '
	mkdir model &&
	cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
	ln -s "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors &&
	"$TENPAK" eval model --text "$DATA/eval/heldout.txt" --ctx 128 --threads 1 \
		--decode 4 >out &&
	grep -q "^tokens       8192, no BOS$" out &&
	grep -q "^perplexity   10.1084 ± 0.2635  (llamacpp, ctx 128, 4032 tokens scored in 64 windows)$" out &&
	grep -q "^speed        prefill [0-9.]* tokens/s, decode [0-9.]* tokens/s  (1 threads, " out
'

cfg_dump() {
	cfg_dump_list=$(git config --file "$1" --list) &&
	printf '%s\n' "$cfg_dump_list" | sort
}

test_expect_success 'install --global registers tenpak with the default store, routes nothing' '
	"$TENPAK" install --global >out &&
	test -z "$(git config --global --get-regexp "standalonetransferagent" || true)" &&
	test "$(git config --global lfs.customtransfer.tenpak.path)" = "$(readlink -f "$TENPAK")" &&
	test "$(git config --global lfs.customtransfer.tenpak.args)" = agent &&
	test "$(git config --global lfs.customtransfer.tenpak.concurrent)" = true &&
	test "$(git config --global tenpak.store)" = "$XDG_DATA_HOME/tenpak/store" &&
	test -d "$XDG_DATA_HOME/tenpak/store"
'

test_expect_success 'install is idempotent and keeps a chosen store' '
	"$TENPAK" install --store "$TRASH/team-store" &&
	cfg_dump "$HOME/.gitconfig" >before &&
	"$TENPAK" install &&
	"$TENPAK" install &&
	cfg_dump "$HOME/.gitconfig" >after &&
	cmp before after &&
	test "$(git config --global tenpak.store)" = "$TRASH/team-store"
'

test_expect_success 'uninstall removes exactly what install wrote' '
	git config --global core.editor vi &&
	"$TENPAK" uninstall &&
	"$TENPAK" uninstall &&
	cfg_dump "$HOME/.gitconfig" >after &&
	! grep -Eq "^(tenpak\.|lfs\.customtransfer|lfs\.standalone)" after &&
	grep -q "^filter.lfs.process=" after &&
	grep -q "^core.editor=vi" after
'

test_expect_success 'uninstall leaves another standalone agent alone' '
	"$TENPAK" install &&
	git config --global lfs.standalonetransferagent other &&
	"$TENPAK" uninstall &&
	test "$(git config --global lfs.standalonetransferagent)" = other &&
	test -z "$(git config --global --get-regexp "^lfs\.customtransfer\.tenpak" || true)" &&
	git config --global --unset lfs.standalonetransferagent
'

test_expect_success 'install --local writes the repository config only' '
	git init -q repo &&
	(cd repo && "$TENPAK" install --local --store "file://$TRASH/local%20store") &&
	test "$(git -C repo config --local tenpak.store)" = "file://$TRASH/local%20store" &&
	{ test -d "$TRASH/local store/objects" || test -d "$TRASH/local store/tmp"; } &&
	test -z "$(git config --global tenpak.store || true)" &&
	(cd repo/.git && "$TENPAK" uninstall --local) &&
	test -z "$(git -C repo config --local --get-regexp tenpak || true)"
'

test_expect_success 'install --local outside a repository fails clearly' '
	mkdir -p norepo &&
	cd norepo &&
	export GIT_CEILING_DIRECTORIES="$TRASH" &&
	test_must_fail "$TENPAK" install --local 2>err &&
	grep -q "repository" err
'

test_expect_success 'install refuses an unusable store' '
	test_must_fail "$TENPAK" install --store relative/dir 2>err &&
	grep -q "absolute" err &&
	test_must_fail "$TENPAK" install --store "s4://bucket" 2>err &&
	grep -q "unsupported scheme" err &&
	test -z "$(git config --global tenpak.store || true)"
'

test_done
