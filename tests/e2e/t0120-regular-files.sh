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

test_expect_success 'setup' '
	"$TENPAK" install >/dev/null
'

test_expect_success 'HF cache: a FIFO at refs/main is skipped; the snapshot is still found' '
	ft_repo ref 21 acme/fifo-ref &&
	hf_model "$TRASH/hf" acme/fifo-ref gen-ref.safetensors &&
	mkfifo "$hf_dir/refs/main" &&
	(cd ref &&
	 HF_HOME="$TRASH/hf" timeout 20 "$TENPAK" lineage finetuned/model.safetensors \
		>../lineage.out 2>../lineage.err &&
	 HF_HOME="$TRASH/hf" GIT_TRACE=1 timeout 20 git push -q origin main 2>../push.err) &&
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
	(cd snap &&
	 HF_HOME="$TRASH/hf" timeout 20 "$TENPAK" lineage finetuned/model.safetensors \
		>../lineage.out 2>../lineage.err &&
	 HF_HOME="$TRASH/hf" GIT_TRACE=1 timeout 20 git push -q origin main 2>../push.err) &&
	grep -q "skipping $hf_dir/snapshots/0123abcd/model.safetensors: not a regular file" lineage.err &&
	grep -q "skipping $hf_dir/snapshots/0123abcd/model.safetensors.index.json: not a regular file" lineage.err &&
	! grep -q "Hugging Face cache" lineage.out &&
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

test_done
