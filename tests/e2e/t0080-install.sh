#!/bin/sh
# tenpak install routes only the remotes and repositories the user names:
# every other LFS repository keeps its own LFS server. Also uninstall of
# routes, the migration of an old global route, the git-lfs setup warning,
# TENPAK_TRACE's log file, and a repository cloned without tenpak.
. "$(dirname "$0")/lib.sh"

STORE="$TRASH/store"

# routes FILE: the standalonetransferagent keys of a config file, sorted.
routes() {
	git config --file "$1" --get-regexp "^lfs\..*standalonetransferagent$" | sort || true
}

# add_file REPO NAME SEED: commit a 20 kB LFS file in REPO.
add_file() {
	gen_bytes "$TRASH/$1/$2" 20000 "$3" &&
	git -C "$TRASH/$1" add "$2" &&
	git -C "$TRASH/$1" commit -qm "$2"
}

# in_store FILE: FILE's object is in the tenpak store.
in_store() {
	test -f "$(store_object "$STORE" "$(oid_of "$1")")"
}

# on_remote REPO FILE: FILE's object is in REPO.git's own LFS directory,
# where git-lfs's built-in transfer puts it for a local remote.
on_remote() {
	oid=$(oid_of "$TRASH/$1/$2") &&
	test -f "$TRASH/$1.git/lfs/objects/$(echo "$oid" | cut -c1-2)/$(echo "$oid" | cut -c3-4)/$oid"
}

test_expect_success 'install outside a repository registers tenpak and routes nothing' '
	"$TENPAK" install --store "$STORE" >out 2>err &&
	grep -q "none yet" out &&
	test "$(git config --global lfs.customtransfer.tenpak.args)" = agent &&
	test "$(git config --global tenpak.store)" = "$STORE" &&
	test -z "$(routes "$HOME/.gitconfig")" &&
	test ! -s err
'

test_expect_success 'a plain git-lfs repository still pushes and clones without tenpak' '
	new_repo plain &&
	add_file plain a.bin 1 &&
	git -C plain push -q origin main &&
	on_remote plain a.bin &&
	! in_store plain/a.bin &&
	git clone -q plain.git plain-clone &&
	cmp plain/a.bin plain-clone/a.bin
'

test_expect_success '--remote routes that remote, and only whole path parts of it' '
	new_repo routed &&
	new_repo routed2 &&
	"$TENPAK" install --remote "$TRASH/routed.git" >out &&
	grep -q "route: file://$TRASH/routed.git" out &&
	add_file routed b.bin 2 &&
	add_file routed2 c.bin 3 &&
	git -C routed push -q origin main &&
	git -C routed2 push -q origin main &&
	in_store routed/b.bin &&
	! on_remote routed b.bin &&
	! in_store routed2/c.bin &&
	on_remote routed2 c.bin &&
	git clone -q routed.git routed-clone &&
	cmp routed/b.bin routed-clone/b.bin
'

test_expect_success '--remote writes the URL git-lfs matches for each kind of remote' '
	mkdir -p "dir with space" &&
	(cd "dir with space" &&
	 "$TENPAK" install --remote https://hf.example/org/model/ \
		--remote git@git.example:team/models.git \
		--remote ssh://me@git.example:2222/team/other.git \
		--remote https://lfs.example ../x/./y/.. . https://me:secret@pw.example/r \
		>/dev/null) &&
	routes "$HOME/.gitconfig" >got &&
	sort >want <<-EOF &&
	lfs.file://$TRASH/routed.git.standalonetransferagent tenpak
	lfs.https://hf.example/org/model.standalonetransferagent tenpak
	lfs.https://git.example/team/models.git.standalonetransferagent tenpak
	lfs.https://git.example/team/other.git.standalonetransferagent tenpak
	lfs.https://lfs.example.standalonetransferagent tenpak
	lfs.https://me@pw.example/r.standalonetransferagent tenpak
	lfs.file://$TRASH/x.standalonetransferagent tenpak
	lfs.file://$TRASH/dir%20with%20space.standalonetransferagent tenpak
	EOF
	diff want got &&
	test_must_fail "$TENPAK" install --remote https://ok.example ftp://x/y 2>err &&
	grep -q "scheme .ftp." err &&
	routes "$HOME/.gitconfig" >got &&
	diff want got
'

test_expect_success 'a routed https remote pushes to the store offline; others do not' '
	new_repo hub &&
	add_file hub d.bin 4 &&
	git -C hub remote add hf https://hf.example/org/model &&
	git -C hub lfs push hf main >/dev/null 2>&1 &&
	in_store hub/d.bin &&
	add_file hub d2.bin 13 &&
	git -C hub remote add elsewhere https://elsewhere.invalid/org/model &&
	test_must_fail git -C hub lfs push elsewhere main >/dev/null 2>&1 &&
	! in_store hub/d2.bin
'

test_expect_success 'a remote in a directory with a space is routed; its neighbour not' '
	new_repo sp &&
	mv sp.git "dir with space/" &&
	git -C sp remote set-url origin "$TRASH/dir with space/sp.git" &&
	add_file sp e.bin 5 &&
	git -C sp push -q origin main &&
	in_store sp/e.bin &&
	mkdir "dir with space2" &&
	git init -q --bare "dir with space2/sp.git" &&
	add_file sp e2.bin 14 &&
	git -C sp remote add neighbour "$TRASH/dir with space2/sp.git" &&
	git -C sp push -q neighbour main &&
	! in_store sp/e2.bin &&
	test -d "dir with space2/sp.git/lfs/objects"
'

test_expect_success 'uninstall --remote removes that route only' '
	"$TENPAK" uninstall --remote https://lfs.example/ >out &&
	grep -q "1 key" out &&
	! routes "$HOME/.gitconfig" | grep -q lfs.example &&
	routes "$HOME/.gitconfig" | grep -q hf.example &&
	test "$(git config --global lfs.customtransfer.tenpak.args)" = agent
'

test_expect_success 'install inside a repository routes every remote of it, there only' '
	new_repo inrepo &&
	(cd inrepo && "$TENPAK" install >out) &&
	grep -q "every remote of this repository" inrepo/out &&
	test "$(git -C inrepo config --local lfs.standalonetransferagent)" = tenpak &&
	test -z "$(git config --global lfs.standalonetransferagent || true)" &&
	add_file inrepo f.bin 6 &&
	git -C inrepo push -q origin main &&
	in_store inrepo/f.bin &&
	add_file plain g.bin 7 &&
	git -C plain push -q origin main &&
	on_remote plain g.bin &&
	! in_store plain/g.bin
'

test_expect_success 'install --local registers and routes the repository in .git/config' '
	new_repo loc &&
	(cd loc && "$TENPAK" install --local --store "$STORE" >/dev/null) &&
	test "$(git -C loc config --local lfs.standalonetransferagent)" = tenpak &&
	test -z "$(git config --global lfs.standalonetransferagent || true)" &&
	test "$(git -C loc config --local lfs.customtransfer.tenpak.args)" = agent &&
	add_file loc h.bin 8 &&
	git -C loc push -q origin main &&
	in_store loc/h.bin
'

test_expect_success 'uninstall removes every route, then has nothing to remove' '
	git config --global "lfs.https://other.example.standalonetransferagent" other &&
	(cd inrepo && "$TENPAK" uninstall >../out) &&
	grep -q "removed from $HOME/.gitconfig" out &&
	grep -q "removed from .*inrepo/.git/config" out &&
	test "$(routes "$HOME/.gitconfig")" = \
		"lfs.https://other.example.standalonetransferagent other" &&
	test -z "$(routes inrepo/.git/config)" &&
	test -z "$(git config --global --get-regexp "^(tenpak|lfs\.customtransfer)\." || true)" &&
	(cd inrepo && "$TENPAK" uninstall >../out) &&
	grep -q "nothing to remove" out &&
	(cd loc && "$TENPAK" uninstall --local >/dev/null && "$TENPAK" uninstall --local >../out) &&
	grep -q "nothing to remove" out &&
	test -z "$(routes loc/.git/config)" &&
	git config --global --unset "lfs.https://other.example.standalonetransferagent"
'

test_expect_success 'install removes the global route an older tenpak wrote, and says so' '
	git config --global lfs.standalonetransferagent tenpak &&
	"$TENPAK" install --store "$STORE" >/dev/null 2>err &&
	grep -q "removed lfs.standalonetransferagent = tenpak from $HOME/.gitconfig" err &&
	test -z "$(git config --global lfs.standalonetransferagent || true)" &&
	git config --global lfs.standalonetransferagent tenpak &&
	(cd loc && "$TENPAK" install --local >/dev/null 2>../err) &&
	grep -q "older tenpak" err &&
	test "$(git config --global lfs.standalonetransferagent)" = tenpak &&
	"$TENPAK" install --global >/dev/null 2>&1 &&
	test -z "$(git config --global lfs.standalonetransferagent || true)"
'

test_expect_success 'install warns when git-lfs is not set up, and not when it is' '
	git config --global --remove-section filter.lfs &&
	"$TENPAK" install >/dev/null 2>err &&
	grep -q "warning: git-lfs is not set up" err &&
	grep -q "git lfs install" err &&
	git lfs install --skip-repo >/dev/null &&
	"$TENPAK" install >/dev/null 2>err &&
	test ! -s err
'

test_expect_success 'TENPAK_TRACE=1 git push leaves the log in .git/tenpak/trace.log' '
	"$TENPAK" install --remote "$TRASH/traced.git" >/dev/null &&
	new_repo traced &&
	add_file traced i.bin 9 &&
	(cd traced && TENPAK_TRACE=1 git push -q origin main 2>../err) &&
	test -f traced/.git/tenpak/trace.log &&
	head -n 1 traced/.git/tenpak/trace.log |
		grep -q "appending this log to $TRASH/traced/.git/tenpak/trace.log" &&
	grep -q "init upload remote=origin" traced/.git/tenpak/trace.log &&
	! grep -q "appending this log" err &&
	add_file traced j.bin 10 &&
	(cd traced && TENPAK_TRACE="$TRASH/my trace.log" git push -q origin main) &&
	grep -q "$(oid_of traced/j.bin)" "$TRASH/my trace.log" &&
	! grep -q "$(oid_of traced/j.bin)" traced/.git/tenpak/trace.log
'

test_expect_success 'the trace log of a linked worktree is in the main .git' '
	git -C traced worktree add -q ../traced-wt &&
	add_file traced-wt k.bin 11 &&
	(cd traced-wt && TENPAK_TRACE=1 git push -q origin HEAD:side) &&
	grep -q "$(oid_of traced-wt/k.bin)" traced/.git/tenpak/trace.log
'

# What README's "Cloning without tenpak" recommends: .lfsconfig names an
# endpoint that only tenpak users route.
test_expect_success 'an .lfsconfig endpoint: tenpak users clone, others see it named' '
	new_repo team &&
	git -C team config --file .lfsconfig lfs.url https://tenpak.invalid/team &&
	git -C team add .lfsconfig &&
	add_file team l.bin 12 &&
	"$TENPAK" install --remote https://tenpak.invalid >/dev/null &&
	git -C team push -q origin main &&
	in_store team/l.bin &&
	git clone -q team.git team-clone &&
	cmp team/l.bin team-clone/l.bin &&
	"$TENPAK" uninstall --remote https://tenpak.invalid >/dev/null &&
	test_must_fail git clone -q team.git team-plain 2>err &&
	grep -q "https://tenpak.invalid/team" err
'

test_expect_success 'a team file through include.path routes; install and uninstall leave it alone' '
	"$TENPAK" uninstall >/dev/null &&
	F="$TRASH/team.gitconfig" &&
	git config --file "$F" lfs.customtransfer.tenpak.path "$(readlink -f "$TENPAK")" &&
	git config --file "$F" lfs.customtransfer.tenpak.args agent &&
	git config --file "$F" lfs.customtransfer.tenpak.concurrent true &&
	git config --file "$F" tenpak.store "$TRASH/team-store" &&
	git config --file "$F" "lfs.file://$TRASH/teamfile.git.standalonetransferagent" tenpak &&
	cp "$F" team.before &&
	git config --global include.path "$F" &&
	new_repo teamfile &&
	add_file teamfile m.bin 15 &&
	git -C teamfile push -q origin main &&
	test -f "$(store_object "$TRASH/team-store" "$(oid_of teamfile/m.bin)")" &&
	(cd teamfile && "$TENPAK" install >/dev/null && "$TENPAK" uninstall >/dev/null) &&
	cmp "$F" team.before &&
	git config --global --unset include.path
'

test_done
