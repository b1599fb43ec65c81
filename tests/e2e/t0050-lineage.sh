#!/bin/sh
# Lineage-aware transfers: fine-tunes are stored as deltas against the base
# tenpak finds (history, metadata, hub ids, the HF cache, overrides), and
# every clone rebuilds the exact bytes.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib.sh"

DATA="$ROOT/tests/data/fixtures"
FT_SIZE=$(wc -c <"$DATA/full_ft-bf16.safetensors")

# Each test uses its own store, so its statistics are its own.
use_store() {
	export TENPAK_STORE="$TRASH/$1"
}

# stat_of FIELD [KIND]: a number from `tenpak store stats --json`.
stat_of() {
	"$TENPAK" store stats --json >"$TRASH/stats.json" &&
	if [ $# -eq 2 ]; then
		sed "s/.*\"$2\":{\([^}]*\)}.*/\1/" "$TRASH/stats.json" | sed "s/.*\"$1\":\([0-9]*\).*/\1/"
	else
		sed "s/.*\"$1\":\([0-9]*\).*/\1/" "$TRASH/stats.json"
	fi
}

test_expect_success 'setup' '
	"$TENPAK" install --remote "$TRASH" >/dev/null
'

test_expect_success 'history: a fine-tune at the same path costs a fraction of its size' '
	use_store s-history &&
	new_repo hist &&
	cd hist &&
	cp "$DATA/base-bf16.safetensors" model.safetensors &&
	git add . && git commit -qm base && git push -q origin main &&
	before=$(stat_of physical_bytes) &&
	cp "$DATA/full_ft-bf16.safetensors" model.safetensors &&
	git commit -qam "fine-tune" &&
	"$TENPAK" lineage --json >lineage.json &&
	grep -q "\"source\":\"history\"" lineage.json &&
	grep -q "\"choice\":0" lineage.json &&
	git push -q origin main &&
	grew=$(( $(stat_of physical_bytes) - before )) &&
	echo "fine-tune of $FT_SIZE bytes stored in $grew" &&
	# The fixture fine-tune codes to 0.46 of its size; whole it is 0.66.
	test "$grew" -lt $((FT_SIZE * 55 / 100)) &&
	test "$(stat_of objects delta)" = 1 &&
	cd .. && clone_check hist model.safetensors
'

# gen_pair DIR SEED: DIR/base and DIR/finetuned models, a fine-tune pair.
gen_pair() {
	mkdir -p "$1/base" "$1/finetuned" &&
	"$TP_GEN" model "$1/base/model.safetensors" "$2" &&
	"$TP_GEN" model "$1/finetuned/model.safetensors" "$2" --finetune $(($2 + 1))
}

test_expect_success 'metadata: finetuned/config.json names the base directory' '
	use_store s-config &&
	new_repo meta &&
	gen_pair meta 11 &&
	printf "{\"_name_or_path\": \"base\", \"model_type\": \"llama\"}\n" >meta/finetuned/config.json &&
	(cd meta && git add . && git commit -qm models &&
	 "$TENPAK" lineage finetuned/model.safetensors >../lineage.txt &&
	 git push -q origin main) &&
	grep -q "metadata  finetuned/config.json: _name_or_path = base" lineage.txt &&
	test "$(stat_of objects delta)" = 1 &&
	test "$(stat_of objects whole)" = 1 &&
	clone_check meta base/model.safetensors finetuned/model.safetensors
'

test_expect_success 'metadata: the model card names the base' '
	use_store s-card &&
	new_repo card &&
	gen_pair card 13 &&
	printf -- "---\nlicense: mit\nbase_model:\n  - base\ntags: [x]\n---\n# A fine-tune\n" \
		>card/finetuned/README.md &&
	(cd card && git add . && git commit -qm models && git push -q origin main &&
	 "$TENPAK" lineage finetuned/model.safetensors >../lineage.txt) &&
	grep -q "README.md: base_model = base" lineage.txt &&
	test "$(stat_of objects delta)" = 1 &&
	clone_check card finetuned/model.safetensors
'

test_expect_success 'metadata: a hub id mapped by tenpak.<id>.model' '
	use_store s-hub &&
	new_repo hub &&
	gen_pair hub 15 &&
	printf "{\"_name_or_path\": \"acme/llama-base\"}\n" >hub/finetuned/config.json &&
	(cd hub && git config tenpak.acme/llama-base.model base &&
	 git add . && git commit -qm models && git push -q origin main &&
	 "$TENPAK" lineage finetuned/model.safetensors >../lineage.txt) &&
	grep -q "tenpak.acme/llama-base.model" lineage.txt &&
	test "$(stat_of objects delta)" = 1 &&
	clone_check hub finetuned/model.safetensors
'

test_expect_success 'metadata: a hub id found in the Hugging Face cache' '
	use_store s-hf &&
	new_repo hf &&
	mkdir -p hf/finetuned gen &&
	"$TP_GEN" model gen/base.safetensors 17 &&
	"$TP_GEN" model hf/finetuned/model.safetensors 17 --finetune 18 &&
	hf_cache "$TRASH/hfhome" acme/cached-base gen/base.safetensors >/dev/null &&
	printf "{\"_name_or_path\": \"acme/cached-base\"}\n" >hf/finetuned/config.json &&
	(cd hf && git add . && git commit -qm ft &&
	 HF_HOME="$TRASH/hfhome" "$TENPAK" lineage finetuned/model.safetensors >../lineage.txt &&
	 HF_HOME="$TRASH/hfhome" git push -q origin main) &&
	grep -q "Hugging Face cache" lineage.txt &&
	test "$(stat_of objects delta)" = 1 &&
	test "$(stat_of objects whole)" = 1 &&
	clone_check hf finetuned/model.safetensors
'

test_expect_success 'a clone whose HF cache has the base reads nothing of it from the store' '
	use_store s-hf &&
	base_oid=$(oid_of gen/base.safetensors) &&
	mv "$(store_object "$TRASH/s-hf" "$base_oid")" "$TRASH/base-object" &&
	HF_HOME="$TRASH/hfhome" git clone -q hf.git hf-clone &&
	cmp hf/finetuned/model.safetensors hf-clone/finetuned/model.safetensors &&
	test_must_fail git clone -q hf.git hf-nocache 2>err &&
	grep -q "$base_oid" err &&
	mv "$TRASH/base-object" "$(store_object "$TRASH/s-hf" "$base_oid")"
'

test_expect_success 'sharded base, fine-tune resharded differently' '
	use_store s-shard &&
	new_repo shard &&
	gen_pair gen-shard 19 &&
	mkdir -p shard/base shard/finetuned &&
	"$TP_GEN" shard gen-shard/base/model.safetensors shard/base 3 &&
	"$TP_GEN" shard gen-shard/finetuned/model.safetensors shard/finetuned 2 &&
	printf "{\"_name_or_path\": \"base\"}\n" >shard/finetuned/config.json &&
	(cd shard && git add . && git commit -qm sharded && git push -q origin main &&
	 "$TENPAK" lineage --json finetuned/model-00001-of-00002.safetensors >../lineage.json) &&
	grep -q "model-00003-of-00003.safetensors" lineage.json &&
	test "$(stat_of objects delta)" = 2 &&
	ft_bytes=$(cat shard/finetuned/*.safetensors | wc -c) &&
	delta_bytes=$(stat_of physical_bytes delta) &&
	echo "fine-tune shards: $ft_bytes bytes stored in $delta_bytes" &&
	test "$delta_bytes" -lt $((ft_bytes * 40 / 100)) &&
	clone_check shard finetuned/model-00001-of-00002.safetensors \
		finetuned/model-00002-of-00002.safetensors base/model-00002-of-00003.safetensors
'

# commit_checkpoints REPO SEED N: N checkpoints of one training run at
# REPO/model.safetensors, one commit and push each.
commit_checkpoints() {
	for commit_checkpoints_k in $(seq 1 "$3"); do
		if [ "$commit_checkpoints_k" = 1 ]; then
			"$TP_GEN" model "$1/model.safetensors" "$2"
		else
			"$TP_GEN" model "$1/model.safetensors" "$2" --finetune $(($2 + commit_checkpoints_k))
		fi &&
		(cd "$1" && git add . && git commit -qm "checkpoint $commit_checkpoints_k" && git push -q origin main) || return 1
	done
}

test_expect_success 'a chain of checkpoints: each a delta against the last' '
	use_store s-chain &&
	new_repo chain &&
	commit_checkpoints chain 40 4 &&
	test "$(stat_of objects delta)" = 3 &&
	test "$(stat_of objects whole)" = 1 &&
	GIT_LFS_SKIP_SMUDGE=1 git clone -q chain.git chain-clone &&
	(cd chain-clone && git lfs pull && git checkout -q HEAD~2 && git lfs pull) &&
	git -C chain cat-file -p HEAD~2:model.safetensors >pointer &&
	oid=$(oid_of chain-clone/model.safetensors) &&
	grep -q "$oid" pointer
'

test_expect_success 'a chain beyond tenpak.maxchain is cut by a whole object' '
	use_store s-cap &&
	new_repo cap &&
	git -C cap config tenpak.maxchain 2 &&
	commit_checkpoints cap 50 5 &&
	test "$(stat_of objects delta)" = 3 &&
	test "$(stat_of objects whole)" = 2 &&
	clone_check cap model.safetensors
'

test_expect_success 'an unrelated model of the same shape is stored whole' '
	use_store s-unrelated &&
	new_repo unrel &&
	"$TP_GEN" model unrel/model.safetensors 60 &&
	(cd unrel && git add . && git commit -qm one && git push -q origin main) &&
	"$TP_GEN" model unrel/model.safetensors 61 &&
	(cd unrel && git commit -qam other &&
	 "$TENPAK" lineage >../lineage.txt &&
	 git push -q origin main) &&
	grep -q "choice: whole" lineage.txt &&
	test "$(stat_of objects delta)" = 0 &&
	test "$(stat_of objects whole)" = 2 &&
	clone_check unrel model.safetensors
'

test_expect_success 'an override beats metadata' '
	use_store s-override &&
	new_repo over &&
	gen_pair over 70 &&
	mkdir -p over/other &&
	"$TP_GEN" model over/other/model.safetensors 90 &&
	printf "{\"_name_or_path\": \"other\"}\n" >over/finetuned/config.json &&
	(cd over && git config "tenpak.finetuned/*.base" base &&
	 git add . && git commit -qm models &&
	 "$TENPAK" lineage --json finetuned/model.safetensors >../lineage.json &&
	 git push -q origin main) &&
	grep -q "\"candidates\":\[{\"source\":\"override\"" lineage.json &&
	test "$(stat_of objects delta)" = 1 &&
	clone_check over finetuned/model.safetensors
'

test_expect_success 'store stats and fsck' '
	use_store s-history &&
	"$TENPAK" store stats >stats.txt &&
	grep -q "^objects: *2$" stats.txt &&
	grep -q "delta *1 objects" stats.txt &&
	"$TENPAK" store fsck >fsck.txt &&
	grep -q "2 objects checked, 2 ok, 0 with problems" fsck.txt &&
	"$TENPAK" store fsck --sample 1 --json >fsck.json &&
	grep -q "\"checked\":1,\"ok\":1" fsck.json &&
	base_oid=$(oid_of "$DATA/base-bf16.safetensors") &&
	obj=$(store_object "$TRASH/s-history" "$base_oid") &&
	chmod u+w "$obj" &&
	printf "\377\377\377\377" | dd of="$obj" bs=1 seek=5000 conv=notrunc 2>/dev/null &&
	test_must_fail "$TENPAK" store fsck >fsck.txt &&
	grep -q "^$base_oid: " fsck.txt &&
	grep -q "0 ok, 2 with problems" fsck.txt
'

test_done
