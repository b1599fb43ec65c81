# Shell test library for tenpak's end-to-end tests, in the style of git's
# t/test-lib.sh. Source it from a test script, then:
#
#   test_expect_success 'what it shows' '
#       commands &&
#       more commands
#   '
#   test_done
#
# Each test runs in a subshell with `set -e` in a throw-away directory with
# its own HOME, so nothing leaks between scripts or into the user's setup.
# Environment: TENPAK (the binary), TP_GEN (the data generator).

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
mkdir -p "$HOME"
git config --global user.name "tenpak tests"
git config --global user.email "tests@tenpak.invalid"
git config --global init.defaultBranch main
git config --global advice.detachedHead false
git lfs install --skip-repo >/dev/null
cd "$TRASH"

test_expect_success() {
	test_count=$((test_count + 1))
	if (set -e; eval "$2") >"$TRASH/test.log" 2>&1; then
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

# test_must_fail CMD...: CMD exits non-zero but was not killed by a signal.
test_must_fail() {
	set +e
	"$@"
	rc=$?
	set -e
	if [ "$rc" -eq 0 ]; then
		echo "test_must_fail: '$*' succeeded" >&2
		return 1
	fi
	if [ "$rc" -gt 128 ]; then
		echo "test_must_fail: '$*' died of signal $((rc - 128))" >&2
		return 1
	fi
	return 0
}

# gen_bytes FILE SIZE SEED: deterministic content.
gen_bytes() {
	"$TP_GEN" bytes "$2" "$3" >"$1"
}

# oid_of FILE: its sha256, the LFS oid.
oid_of() {
	sha256sum "$1" | cut -d' ' -f1
}

# store_object STORE OID: the path of an object in a local store.
store_object() {
	echo "$1/objects/$(echo "$2" | cut -c1-2)/$(echo "$2" | cut -c3-4)/$2"
}

# count_objects STORE: how many objects a local store holds.
count_objects() {
	find "$1/objects" -type f 2>/dev/null | wc -l
}

# push_all REPO...: git push each REPO (a directory of $TRASH) at the same
# time; fails, showing the failed push's output, unless every push worked.
push_all() {
	for r in "$@"; do
		(cd "$TRASH/$r" && git push -q origin main >"$TRASH/$r.push.log" 2>&1
		 echo $? >"$TRASH/$r.push.rc") &
	done
	wait
	for r in "$@"; do
		test "$(cat "$TRASH/$r.push.rc")" = 0 || { cat "$TRASH/$r.push.log"; return 1; }
	done
}

# new_repo DIR: a repository that tracks *.bin and *.safetensors with LFS,
# and a bare remote DIR.git it pushes to.
new_repo() {
	git init -q --bare "$1.git"
	git init -q "$1"
	(cd "$1" &&
	 git lfs track '*.bin' '*.safetensors' >/dev/null &&
	 git add .gitattributes &&
	 git commit -qm "track model files" &&
	 git remote add origin "../$1.git")
}
