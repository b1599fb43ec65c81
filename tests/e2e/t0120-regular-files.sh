#!/bin/sh
# Files tenpak reads from places other programs write (the Hugging Face
# cache, paths git-lfs hands the agent, the store) are used only when they
# are regular files: a FIFO there is skipped, never waited on (each command
# runs under `timeout 20`, so the old hang shows as a failure), and a
# symlink planted inside a local store is never followed.
. "$(dirname "$0")/lib.sh"

# hf_model HF_HOME ORG/NAME FILE: FILE as model.safetensors of ORG/NAME in
# a Hugging Face hub cache, laid out as huggingface_hub does (refs/main,
# snapshots/0123abcd/, blobs/<oid>). The repo's directory in hf_dir.
hf_model() {
	hf_dir="$1/hub/models--$(echo "$2" | sed "s|/|--|")"
	oid=$(oid_of "$3")
	mkdir -p "$hf_dir/blobs" "$hf_dir/snapshots/0123abcd" "$hf_dir/refs"
	cp "$3" "$hf_dir/blobs/$oid"
	ln -s "../../blobs/$oid" "$hf_dir/snapshots/0123abcd/model.safetensors"
}

# ft_repo DIR SEED HUB_ID: a repository whose finetuned/ model names HUB_ID
# as its base; the base itself in gen-DIR.safetensors.
ft_repo() {
	new_repo "$1" &&
	mkdir -p "$1/finetuned" &&
	"$TP_GEN" model "gen-$1.safetensors" "$2" &&
	"$TP_GEN" model "$1/finetuned/model.safetensors" "$2" --finetune $(($2 + 1)) &&
	printf "{\"_name_or_path\": \"%s\"}\n" "$3" >"$1/finetuned/config.json" &&
	(cd "$1" && git add . && git commit -qm ft)
}

export TENPAK_STORE="$TRASH/store"

# lineage_and_push REPO: `tenpak lineage` of its fine-tune (lineage.out,
# lineage.err), then a push (its trace, with the agent's stderr, in
# push.err), each given 20 s to finish, with the cache in $TRASH/hf.
lineage_and_push() {
	(cd "$1" &&
	 HF_HOME="$TRASH/hf" timeout 20 "$TENPAK" lineage finetuned/model.safetensors \
		>../lineage.out 2>../lineage.err &&
	 HF_HOME="$TRASH/hf" GIT_TRACE=1 timeout 20 git push -q origin main 2>../push.err)
}

test_expect_success 'setup' '
	"$TENPAK" install --remote "$TRASH" >/dev/null
'

test_expect_success 'HF cache: a FIFO at refs/main is skipped; the snapshot is still found' '
	ft_repo ref 21 acme/fifo-ref &&
	hf_model "$TRASH/hf" acme/fifo-ref gen-ref.safetensors &&
	mkfifo "$hf_dir/refs/main" &&
	lineage_and_push ref &&
	grep -q "skipping $hf_dir/refs/main: not a regular file" lineage.err &&
	grep -q "Hugging Face cache" lineage.out &&
	grep -q "skipping $hf_dir/refs/main: not a regular file" push.err &&
	test -p "$hf_dir/refs/main"
'

test_expect_success 'HF cache: FIFOs as snapshot files are skipped; the model is stored whole' '
	ft_repo snap 23 acme/fifo-snap &&
	hf_model "$TRASH/hf" acme/fifo-snap gen-snap.safetensors &&
	rm "$hf_dir/snapshots/0123abcd/model.safetensors" &&
	mkfifo "$hf_dir/snapshots/0123abcd/model.safetensors" \
		"$hf_dir/snapshots/0123abcd/model.safetensors.index.json" &&
	printf 0123abcd >"$hf_dir/refs/main" &&
	lineage_and_push snap &&
	grep -q "skipping $hf_dir/snapshots/0123abcd/model.safetensors: not a regular file" lineage.err &&
	grep -q "skipping $hf_dir/snapshots/0123abcd/model.safetensors.index.json: not a regular file" lineage.err &&
	! grep -q "(Hugging Face cache)" lineage.out &&
	grep -q "unresolved \"acme/fifo-snap\"" lineage.out &&
	grep -q "choice: whole" lineage.out &&
	grep -q "skipping .*model.safetensors.index.json: not a regular file" push.err &&
	test "$(count_objects "$TRASH/store")" -ge 1
'

test_expect_success 'agent: an upload whose path is a FIFO is refused, not waited on' '
	git init -q agent &&
	mkfifo agent/model.safetensors agent/data.bin &&
	oid=$(printf x | sha256sum | cut -d" " -f1) &&
	cat >in <<-EOF &&
	{"event":"init","operation":"upload","remote":"origin"}
	{"event":"upload","oid":"$oid","size":1,"path":"$TRASH/agent/model.safetensors"}
	{"event":"upload","oid":"$oid","size":1,"path":"$TRASH/agent/data.bin"}
	{"event":"terminate"}
	EOF
	(cd agent && timeout 20 "$TENPAK" agent <../in >../out 2>../err) &&
	test "$(grep -c "\"oid\":\"$oid\",\"error\"" out)" = 2 &&
	grep -q "model.safetensors is not a regular file" out &&
	grep -q "data.bin is not a regular file" out
'

# A file pushed into store STORE from repo DIR: its oid in oid.
pushed_file() {
	new_repo "$1" &&
	gen_bytes "$1/data.bin" 100000 "$2" &&
	oid=$(oid_of "$1/data.bin") &&
	(cd "$1" && git add . && git commit -qm data)
}

test_expect_success 'store: objects/ab a symlink to outside: the push fails naming it, nothing outside' '
	pushed_file linkdir 31 &&
	ab=$(echo "$oid" | cut -c1-2) &&
	mkdir -p outside "$TRASH/s-linkdir/objects" &&
	ln -s "$TRASH/outside" "$TRASH/s-linkdir/objects/$ab" &&
	(cd linkdir &&
	 test_must_fail env TENPAK_STORE="$TRASH/s-linkdir" timeout 20 git push -q origin main 2>../push.err) &&
	grep -q "objects/$ab is a symbolic link" push.err &&
	test -z "$(ls -A outside)" &&
	test -h "$TRASH/s-linkdir/objects/$ab"
'

test_expect_success 'store: tmp a symlink to outside: the push fails naming it, nothing written there' '
	pushed_file linktmp 33 &&
	mkdir -p outside-tmp s-linktmp &&
	ln -s "$TRASH/outside-tmp" s-linktmp/tmp &&
	touch -d 2001-01-01 outside-tmp &&
	(cd linktmp &&
	 test_must_fail env TENPAK_STORE="$TRASH/s-linktmp" timeout 20 git push -q origin main 2>../push.err) &&
	grep -q "s-linktmp/tmp is a symbolic link" push.err &&
	test -z "$(ls -A outside-tmp)" &&
	test -z "$(find outside-tmp -newermt 2002-01-01)" &&
	test "$(count_objects "$TRASH/s-linktmp")" = 0
'

test_expect_success 'store: an object that is a symlink to outside is not served; a push replaces it' '
	pushed_file linkobj 35 &&
	(cd linkobj && TENPAK_STORE="$TRASH/s-linkobj" git push -q origin main) &&
	obj=$(store_object "$TRASH/s-linkobj" "$oid") &&
	mkdir -p elsewhere &&
	mv "$obj" elsewhere/object &&
	ln -s "$TRASH/elsewhere/object" "$obj" &&
	test_must_fail env TENPAK_STORE="$TRASH/s-linkobj" timeout 20 git clone -q linkobj.git linkobj-clone 2>clone.err &&
	grep -q "objects/.*/$oid is a symbolic link" clone.err &&
	(cd linkobj && TENPAK_STORE="$TRASH/s-linkobj" timeout 20 git lfs push --all origin 2>../push.err) &&
	test ! -h "$obj" && test -f "$obj" &&
	test -f elsewhere/object &&
	rm -rf linkobj-clone &&
	TENPAK_STORE="$TRASH/s-linkobj" git clone -q linkobj.git linkobj-clone &&
	cmp linkobj/data.bin linkobj-clone/data.bin
'

test_done
