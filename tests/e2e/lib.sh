# Shell test library for tenpak's end-to-end tests, in the style of git's
# t/test-lib.sh. Source it from a test script, then:
#
#   test_expect_success 'what it shows' '
#       commands &&
#       more commands
#   '
#   test_done
#
# Each test runs in a subshell, in a throw-away directory with its own HOME,
# so nothing leaks between scripts or into the user's setup. Environment:
# TENPAK (the binary), TP_GEN (the data generator).
#
# How a body must be written, and why (POSIX sh, dash is /bin/sh):
#
# - A body is ONE && chain: `a && b && c`. A body runs as a plain command
#   `(set -e; eval BODY)` and its exit status decides the test, but set -e
#   alone is not enough: it is ignored for every command of an && or ||
#   list but the last, inside `if`/`while`/`until` conditions, after `!`,
#   and inside any function, subshell or loop that is itself run from such
#   a place. In `x && for ...; do cmp a b; done && y` a failing cmp in any
#   iteration but the last is lost, and in `helper && y` nothing inside
#   `helper` stops it. So the chain, not set -e, carries the failures.
# - A loop body is one && chain that ends in `|| return 1` (or `|| exit 1`),
#   so that a failure in any iteration ends the test:
#       for f in a b; do
#           cmp "$f" "copy/$f" || return 1
#       done &&
# - A subshell `( ... )` and each branch of an `if` are one && chain too.
#   `{ ...; }` groups and `case` items are not checked: use them for failure
#   handlers such as `|| { cat log; return 1; }`.
# - A top-level `a || b` must be grouped, `{ a || b; } &&`, or the chain
#   lint (below) sees it as a break.
# - A pipeline's status is its last command's, and a $(...) inside a
#   command's arguments loses its status: write a command's output to a
#   file, or assign it (`x=$(cmd) &&`), before testing it. The lint does
#   not check this one.
# - Helper functions (here and in the test scripts) follow the same rules,
#   with `return 1` in loops, because set -e is off inside them whenever
#   they are called from an && chain.
#
# Before a body runs, the chain lint checks it, as git's test_chain_lint
# does: `(exit 117) && BODY` must exit 117, which proves that no top-level
# command sits outside the && chain; and test_lint_nested_ reads the body
# and checks the loops, subshells and if branches. A body that fails the
# lint is reported `not ok` and not run. TEST_CHAIN_LINT=0 turns the lint
# off; only t0002-testlib.sh uses that, to test the runner on its own.

set -u

: "${TENPAK:?set TENPAK to the tenpak binary}"
: "${TP_GEN:?set TP_GEN to the tp-gen binary}"

TEST_NAME=$(basename "$0" .sh)
TRASH=$(mktemp -d "${TMPDIR:-/tmp}/tenpak-$TEST_NAME.XXXXXX")
test_count=0
test_failed=0

# A clean, private git environment.
export HOME="$TRASH/home"
export XDG_DATA_HOME="$HOME/.local/share"
export XDG_CONFIG_HOME="$HOME/.config"
export GIT_CONFIG_NOSYSTEM=1
export GIT_TERMINAL_PROMPT=0
unset GIT_DIR GIT_WORK_TREE GIT_TRACE TENPAK_STORE TENPAK_TRACE GIT_LFS_SKIP_SMUDGE
{ mkdir -p "$HOME" &&
  git config --global user.name "tenpak tests" &&
  git config --global user.email "tests@tenpak.invalid" &&
  git config --global init.defaultBranch main &&
  git config --global advice.detachedHead false &&
  git lfs install --skip-repo >/dev/null &&
  cd "$TRASH"; } || { echo "Bail out! cannot set up $TRASH"; exit 1; }

# test_lint_nested_: reads a body on stdin; prints "line N: why" and fails
# when a loop, subshell or if branch in it is not one && chain (a loop's
# ending in `|| ...`). A small shell tokenizer: quotes, $(...), ${...},
# backquotes, comments and here-documents are skipped as data.
test_lint_nested_() {
	awk '
# Tokens: W (a word, quotes and expansions included), OP (&& || ; ;; & | ( ))
# and NL, each with its line. Comments and here-document bodies are dropped.
function nls_in(str) { return gsub(/\n/, "", str) }
function skip_sq(s, i,    j) {
	j = index(substr(s, i + 1), "\047")
	return j ? i + j + 1 : length(s) + 1
}
function skip_bq(s, i,    c) {
	for (i++; i <= length(s); i++) {
		c = substr(s, i, 1)
		if (c == "\\") i++
		else if (c == "`") return i + 1
	}
	return i
}
function skip_dq(s, i,    c) {
	i++
	while (i <= length(s)) {
		c = substr(s, i, 1)
		if (c == "\\") i += 2
		else if (c == "\"") return i + 1
		else if (c == "`") i = skip_bq(s, i)
		else if (c == "$" && substr(s, i + 1, 1) == "(") i = skip_nest(s, i + 2, "(", ")")
		else if (c == "$" && substr(s, i + 1, 1) == "{") i = skip_nest(s, i + 2, "{", "}")
		else i++
	}
	return i
}
# skip_nest S I OPEN CLOSE: I is just past an OPEN; the index past its CLOSE.
function skip_nest(s, i, op, cl,    c, depth) {
	depth = 1
	while (i <= length(s)) {
		c = substr(s, i, 1)
		if (c == "\\") i += 2
		else if (c == "\047") i = skip_sq(s, i)
		else if (c == "\"") i = skip_dq(s, i)
		else if (c == "`") i = skip_bq(s, i)
		else {
			if (c == op) depth++
			else if (c == cl && --depth == 0) return i + 1
			i++
		}
	}
	return i
}
function emit(type, val) { nt++; tt[nt] = type; tv[nt] = val; tl[nt] = line }
function flush() { if (inword) emit("W", word); word = ""; inword = 0 }
function tokenize(s,    n, i, j, c, c2, start, delim, strip, k, l, e) {
	n = length(s); i = 1; line = 1; nhd = 0
	while (i <= n) {
		c = substr(s, i, 1); c2 = substr(s, i + 1, 1)
		if (c == "\\" && c2 == "\n") { i += 2; line++; continue }
		if (c == "\\") { word = word c c2; inword = 1; i += 2; continue }
		if (c == " " || c == "\t") { flush(); i++; continue }
		if (c == "\n") {
			flush(); emit("NL", ""); line++; i++
			# here-document bodies are data: skip them
			for (k = 1; k <= nhd; k++) {
				while (i <= n) {
					e = index(substr(s, i), "\n")
					l = e ? substr(s, i, e - 1) : substr(s, i)
					i = e ? i + e : n + 1; line++
					if (hstrip[k]) sub(/^\t+/, "", l)
					if (l == hdelim[k]) break
				}
			}
			nhd = 0
			continue
		}
		if (c == "#" && !inword) {
			e = index(substr(s, i), "\n")
			i = e ? i + e - 1 : n + 1
			continue
		}
		start = i
		if (c == "\047") i = skip_sq(s, i)
		else if (c == "\"") i = skip_dq(s, i)
		else if (c == "`") i = skip_bq(s, i)
		else if (c == "$" && c2 == "(") i = skip_nest(s, i + 2, "(", ")")
		else if (c == "$" && c2 == "{") i = skip_nest(s, i + 2, "{", "}")
		if (i != start) {
			j = substr(s, start, i - start); word = word j; inword = 1
			line += nls_in(j)
			continue
		}
		if (c == "&" || c == "|" || c == ";") {
			flush()
			if (c2 == c) { emit("OP", c c); i += 2 } else { emit("OP", c); i++ }
			continue
		}
		if (c == "(" || c == ")") { flush(); emit("OP", c); i++; continue }
		if (c == "<" && c2 == "<") {
			i += 2; strip = 0
			if (substr(s, i, 1) == "-") { strip = 1; i++ }
			while (substr(s, i, 1) ~ /[ \t]/) i++
			delim = ""
			while (i <= n && substr(s, i, 1) !~ /[ \t\n;&|()<>]/) {
				c = substr(s, i, 1)
				if (c != "\047" && c != "\"" && c != "\\") delim = delim c
				i++
			}
			nhd++; hdelim[nhd] = delim; hstrip[nhd] = strip
			word = word "<<" delim; inword = 1
			continue
		}
		if (c == "<" || c == ">") {
			word = word c; inword = 1; i++
			if (c2 == ">" || c2 == "&" || c2 == "|") { word = word c2; i++ }
			continue
		}
		word = word c; inword = 1; i++
	}
	flush()
}

# The parse: a stack of frames (top, forhead, loopcond, loop, paren, if,
# brace, case), each counting the and-or lists at its own level (nls, cur)
# and the last && or || of the current one (lop). A checked frame may hold
# one list only; a loop, one that ends in ||.
function fail(ln, msg) { if (err == "") err = "line " ln ": " msg }
function reset() { nls[d] = 0; cur[d] = 0; lop[d] = ""; lastlop[d] = ""; cont[d] = 0; cmdpos[d] = 1 }
function push(kind) { d++; fk[d] = kind; part[d] = ""; cst[d] = ""; reset() }
function pop() { d--; cmdpos[d] = 0; cont[d] = 0 }
function checked() { return fk[d] == "loop" || fk[d] == "paren" || (fk[d] == "if" && part[d] == "then") }
function what() {
	return fk[d] == "loop" ? "a loop body" : fk[d] == "paren" ? "a subshell" : "an if branch"
}
# A command starts at this level: it must continue the current && chain.
function startcmd(ln) {
	if (!cur[d]) {
		if (nls[d] && checked())
			fail(ln, "this command is not joined with && to the one before it, in " what())
		cur[d] = 1; lop[d] = ""
	}
	cont[d] = 0; cmdpos[d] = 0
}
# ; & or a newline ends the current and-or list.
function sep() {
	if (cur[d]) { nls[d]++; lastlop[d] = lop[d] }
	cur[d] = 0; lop[d] = ""; cont[d] = 0; cmdpos[d] = 1
}

function lint(    t, ty, v, ln, k) {
	d = 0; push("top")
	for (t = 1; t <= nt && err == ""; t++) {
		ty = tt[t]; v = tv[t]; ln = tl[t]; k = fk[d]
		if (k == "forhead") {
			# for NAME [in WORDS]; do: only `do` after ; or a newline counts
			if (ty == "W" && v == "do" && t > 1 && (tt[t - 1] == "NL" || tv[t - 1] == ";")) {
				fk[d] = "loop"; fl[d] = ln; reset()
			}
			continue
		}
		if (k == "case" && cst[d] != "item") {
			if (cst[d] == "head") { if (ty == "W" && v == "in") cst[d] = "pattern" }
			else if (ty == "W" && v == "esac") pop()
			else if (ty == "OP" && v == ")") { cst[d] = "item"; reset() }
			continue
		}
		if (ty == "NL") { if (!cont[d]) sep(); continue }
		if (ty == "OP") {
			if (v == "&&" || v == "||") { lop[d] = v; cont[d] = 1; cmdpos[d] = 1 }
			else if (v == "|") { cont[d] = 1; cmdpos[d] = 1 }
			else if (v == ";" || v == "&") sep()
			else if (v == ";;") { if (k == "case") { sep(); cst[d] = "pattern" } }
			else if (v == "(") { if (cmdpos[d]) { startcmd(ln); push("paren") } }
			else if (v == ")") { if (k == "paren") { sep(); pop() } }
			continue
		}
		if (!cmdpos[d]) { cont[d] = 0; continue }
		if (v == "for") { startcmd(ln); push("forhead") }
		else if (v == "while" || v == "until") { startcmd(ln); push("loopcond") }
		else if (v == "if") { startcmd(ln); push("if"); part[d] = "cond" }
		else if (v == "case") { startcmd(ln); push("case"); cst[d] = "head" }
		else if (v == "{") { startcmd(ln); push("brace") }
		else if (v == "do" && k == "loopcond") { fk[d] = "loop"; reset() }
		else if (v == "done" && k == "loop") {
			sep()
			if (lastlop[d] != "||")
				fail(ln, "a loop body must end in `|| return 1` (or `|| exit 1`), or a failure in an early iteration is lost")
			pop()
		}
		else if (k == "if" && (v == "then" || v == "else")) { sep(); part[d] = "then"; reset() }
		else if (k == "if" && v == "elif") { sep(); part[d] = "cond"; reset() }
		else if (k == "if" && v == "fi") { sep(); pop() }
		else if (k == "brace" && v == "}") { sep(); pop() }
		else if (k == "case" && v == "esac") { sep(); pop() }
		else if (v != "!") startcmd(ln)
	}
}

{ src = src $0 "\n" }
END {
	tokenize(src)
	lint()
	if (err != "") { print err; exit 1 }
}
'
}

# test_lint_ BODY: prints why BODY breaks the && chain rules and fails, or
# succeeds quietly. Nothing of a body that passes runs here; in one whose
# top-level chain is broken, the commands after the break run once, in a
# subshell with their output caught, as in git.
test_lint_() {
	test_lint_why_=$(printf '%s\n' "$1" | test_lint_nested_) || {
		echo "chain-lint: $test_lint_why_"
		return 1
	}
	# As git's test_chain_lint: in an unbroken chain nothing runs after
	# the (exit 117); a command outside the chain would run and change
	# the status.
	test_lint_out_=$( (eval "(exit 117) && $1") 2>&1 </dev/null )
	test_lint_rc_=$?
	[ "$test_lint_rc_" -eq 117 ] && return 0
	echo "chain-lint: a top-level command is outside the && chain (or the body has a syntax error): (exit 117) && BODY exited $test_lint_rc_"
	[ -z "$test_lint_out_" ] || printf '%s\n' "$test_lint_out_" | sed -n 1,20p
	return 1
}

test_expect_success() {
	test_count=$((test_count + 1))
	# The runner relies on set -e in the body's subshell; it has none if
	# this function was called from an if, while, ! or && || list.
	(set -e; false; exit 0)
	if [ $? -eq 0 ]; then
		echo "Bail out! test_expect_success '$1' was called where set -e is ignored"
		exit 1
	fi
	if [ "${TEST_CHAIN_LINT:-1}" != 0 ] && ! test_lint_ "$2" >"$TRASH/test.log" 2>&1; then
		test_failed=$((test_failed + 1))
		echo "not ok $test_count - $1"
		sed 's/^/#   /' "$TRASH/test.log"
		printf '%s\n' "$2" | awk '{ printf "#   %3d  %s\n", NR, $0 }'
		return 0
	fi
	# A plain command, not an if condition, so that set -e holds in it.
	(set -e; eval "$2") >"$TRASH/test.log" 2>&1
	if [ $? -eq 0 ]; then
		echo "ok $test_count - $1"
	else
		test_failed=$((test_failed + 1))
		echo "not ok $test_count - $1"
		sed 's/^/#   /' "$TRASH/test.log"
	fi
}

test_done() {
	echo "$((test_count - test_failed)) passed, $test_failed failed"
	if [ "$test_failed" -eq 0 ]; then
		rm -rf "$TRASH"
		exit 0
	fi
	echo "# kept $TRASH for inspection"
	exit 1
}

# --- helpers ---------------------------------------------------------------
# Each is one && chain (see the top of this file): called from a test's
# chain, set -e is off inside it. Their variables start with the helper's
# name, so they cannot clobber a test's own.

# test_must_fail CMD...: CMD exits non-zero, but was not killed by a signal
# and was found (127 means a mistyped command, not a failure of the product).
test_must_fail() {
	"$@" && test_must_fail_rc=0 || test_must_fail_rc=$?
	if [ "$test_must_fail_rc" -eq 0 ]; then
		echo "test_must_fail: '$*' succeeded" >&2
		return 1
	elif [ "$test_must_fail_rc" -eq 127 ]; then
		echo "test_must_fail: '$*': command not found" >&2
		return 1
	elif [ "$test_must_fail_rc" -gt 128 ]; then
		echo "test_must_fail: '$*' died of signal $((test_must_fail_rc - 128))" >&2
		return 1
	fi
}

# test_expect_code CODE CMD...: CMD exits with status CODE.
test_expect_code() {
	test_expect_code_want=$1 &&
	shift &&
	{ "$@" && test_expect_code_rc=0 || test_expect_code_rc=$?; } &&
	if [ "$test_expect_code_rc" -ne "$test_expect_code_want" ]; then
		echo "test_expect_code: '$*' exited $test_expect_code_rc, not $test_expect_code_want" >&2
		return 1
	fi
}

# test_usage_errors WHO CMD ARGS...: for each ARGS (one string, split on
# blanks), `tenpak CMD ARGS` exits 2, prints nothing on stdout and one line
# on stderr: "tenpak: WHO: ... (see 'tenpak WHO --help')".
test_usage_errors() {
	test_usage_who=$1 &&
	test_usage_cmd=$2 &&
	shift 2 &&
	for test_usage_args in "$@"; do
		# shellcheck disable=SC2086
		test_expect_code 2 "$TENPAK" $test_usage_cmd $test_usage_args >out 2>err &&
		test "$(wc -l <err)" = 1 &&
		grep -q "^tenpak: $test_usage_who: .*(see 'tenpak $test_usage_who --help')\$" err &&
		test ! -s out || { echo "$test_usage_cmd $test_usage_args:"; cat err; return 1; }
	done
}

# clone_check REPO FILE...: a fresh clone of $TRASH/REPO.git (into
# $TRASH/check) has every FILE as $TRASH/REPO has it, byte for byte.
clone_check() {
	clone_check_repo=$1 &&
	shift &&
	rm -rf "$TRASH/check" &&
	git clone -q "$TRASH/$clone_check_repo.git" "$TRASH/check" &&
	for clone_check_f in "$@"; do
		cmp "$TRASH/$clone_check_repo/$clone_check_f" "$TRASH/check/$clone_check_f" || return 1
	done
}

# gen_bytes FILE SIZE SEED: deterministic content.
gen_bytes() {
	"$TP_GEN" bytes "$2" "$3" >"$1"
}

# oid_of FILE: its sha256, the LFS oid; fails if FILE cannot be read.
oid_of() {
	oid_of_sum=$(sha256sum <"$1") &&
	echo "${oid_of_sum%% *}"
}

# store_object STORE OID: the path of an object in a local store; fails on
# anything but a 64-hex oid, so that an empty oid never names a directory.
store_object() {
	case $2 in
	*[!0-9a-f]*) echo "store_object: bad oid '$2'" >&2; return 1 ;;
	esac
	[ "${#2}" -eq 64 ] || { echo "store_object: bad oid '$2'" >&2; return 1; }
	echo "$1/objects/$(printf %.2s "$2")/$(printf %.2s "${2#??}")/$2"
}

# count_objects STORE: how many objects a local store holds (0 when it has
# no objects directory yet).
count_objects() {
	if [ -d "$1/objects" ]; then
		find "$1/objects" -type f | wc -l
	else
		echo 0
	fi
}

# push_all REPO...: git push each REPO (a directory of $TRASH) at the same
# time; fails, showing the failed push's output, unless every push worked.
push_all() {
	for push_all_r in "$@"; do
		rm -f "$TRASH/$push_all_r.push.rc" || return 1
	done &&
	for push_all_r in "$@"; do
		{
			push_all_rc=0
			(cd "$TRASH/$push_all_r" && git push -q origin main) \
				>"$TRASH/$push_all_r.push.log" 2>&1 || push_all_rc=$?
			echo "$push_all_rc" >"$TRASH/$push_all_r.push.rc"
		} &
	done &&
	wait &&
	for push_all_r in "$@"; do
		test "$(cat "$TRASH/$push_all_r.push.rc")" = 0 || {
			echo "push_all: push of $push_all_r failed:"
			cat "$TRASH/$push_all_r.push.log"
			return 1
		}
	done
}

# new_repo DIR: a repository that tracks *.bin and *.safetensors with LFS,
# and a bare remote DIR.git it pushes to.
new_repo() {
	git init -q --bare "$1.git" &&
	git init -q "$1" &&
	(cd "$1" &&
	 git lfs track '*.bin' '*.safetensors' >/dev/null &&
	 git add .gitattributes &&
	 git commit -qm "track model files" &&
	 git remote add origin "../$1.git")
}

# hf_cache HF_HOME ORG/NAME FILE: a Hugging Face hub cache holding FILE as
# model.safetensors of ORG/NAME, laid out as huggingface_hub does
# (blobs/<oid>, snapshots/0123abcd/, refs/main); prints the blob's path.
hf_cache() {
	hf_cache_d="$1/hub/models--$(echo "$2" | sed "s|/|--|")" &&
	hf_cache_oid=$(oid_of "$3") &&
	mkdir -p "$hf_cache_d/blobs" "$hf_cache_d/snapshots/0123abcd" "$hf_cache_d/refs" &&
	cp "$3" "$hf_cache_d/blobs/$hf_cache_oid" &&
	ln -s "../../blobs/$hf_cache_oid" "$hf_cache_d/snapshots/0123abcd/model.safetensors" &&
	printf 0123abcd >"$hf_cache_d/refs/main" &&
	echo "$hf_cache_d/blobs/$hf_cache_oid"
}

# json_get EXPR <FILE: print the python expression EXPR over the JSON
# document d read from stdin; fails unless stdin is one JSON document.
# json_true EXPR <FILE: succeeds when EXPR holds. Scripts that use them
# skip without python3.
json_get() {
	python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"
}

json_true() {
	python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($1) else 1)"
}

# For the llama.cpp cross-checks (t0160, t0175).
# tenpak_ppl CODEC <OPTIMIZE.json: the ppl of candidate CODEC in tenpak
# optimize's JSON (cJSON's layout: one "key": value per line).
tenpak_ppl() {
	awk -v want="$1" '
		/"codec":/ { c = $0; sub(/.*"codec":[[:space:]]*"/, "", c); sub(/".*/, "", c) }
		/"ppl":/ && c == want { v = $0; sub(/.*"ppl":[[:space:]]*/, "", v); sub(/,.*/, "", v);
			print v; found = 1; exit }
		END { exit !found }'
}

# close_to A B TOL: |A - B| / B < TOL (B a perplexity, so > 1).
close_to() {
	echo "llama.cpp $1 tenpak $2" &&
	awk -v a="$1" -v b="$2" -v tol="$3" "BEGIN {
		d = (a - b) / b; if (d < 0) d = -d;
		printf \"relative difference %.3g\n\", d;
		exit !(b > 1 && d < tol) }"
}
