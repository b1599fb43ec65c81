#!/bin/sh
# `tenpak lineage` shows the plan a push executes: the same candidates,
# estimated against the same bytes (checked local copies, bases only in
# the store), under the same tenpak.maxchain, so its choice is what the
# push then stores.
. "$(dirname "$0")/lib.sh"

command -v python3 >/dev/null || { echo "skip: python3 is needed to parse --json"; exit 77; }

export TENPAK_STORE="$TRASH/store"

# planned REPO PATH: what `tenpak lineage` plans for PATH in REPO: "whole",
# or the oids of the chosen candidate's files; fails when it plans nothing.
planned() {
	(cd "$TRASH/$1" && "$TENPAK" lineage --json "$2") >"$TRASH/plan.json" &&
	json_get '"whole" if d["choice"] == "whole" else " ".join(sorted(set(f["oid"] for f in d["candidates"][d["choice"]]["files"])))' \
		<"$TRASH/plan.json"
}

# stored OID: what the store holds for OID: "whole", or the oids of its bases.
stored() {
	"$TENPAK" store show --json "$1" >"$TRASH/show.json" &&
	json_get '" ".join(sorted(b["oid"] for b in d.get("bases", []))) or "whole"' <"$TRASH/show.json"
}

# plan_is_push REPO PATH WANT: lineage plans WANT for PATH ("whole" or a
# base oid), and pushing REPO stores exactly that.
plan_is_push() {
	plan_is_push_plan=$(planned "$1" "$2") &&
	(cd "$TRASH/$1" && git push -q origin main) &&
	plan_is_push_oid=$(oid_of "$TRASH/$1/$2") &&
	plan_is_push_got=$(stored "$plan_is_push_oid") &&
	echo "$2: lineage planned $plan_is_push_plan, the push stored $plan_is_push_got" &&
	test "$plan_is_push_plan" = "$3" &&
	test "$plan_is_push_got" = "$3"
}

# checkpoint REPO SEED K: checkpoint K of a training run at
# REPO/model.safetensors, committed.
checkpoint() {
	if [ "$3" = 1 ]; then
		"$TP_GEN" model "$TRASH/$1/model.safetensors" "$2"
	else
		"$TP_GEN" model "$TRASH/$1/model.safetensors" "$2" --finetune $(($2 + $3))
	fi &&
	(cd "$TRASH/$1" && git add . && git commit -qm "checkpoint $3")
}

test_expect_success 'setup' '
	"$TENPAK" install --remote "$TRASH" >/dev/null
'

test_expect_success 'a fine-tune of the previous version: the planned delta is stored' '
	new_repo hist &&
	checkpoint hist 10 1 &&
	(cd hist && git push -q origin main) &&
	prev=$(oid_of hist/model.safetensors) &&
	checkpoint hist 10 2 &&
	plan_is_push hist model.safetensors "$prev"
'

test_expect_success 'past tenpak.maxchain: lineage says why, and plans the whole file stored' '
	new_repo cap &&
	git -C cap config tenpak.maxchain 2 &&
	for k in 1 2 3; do
		checkpoint cap 20 $k &&
		(cd cap && git push -q origin main) || return 1
	done &&
	oid=$(oid_of cap/model.safetensors) &&
	third=$(stored "$oid") &&
	test "$third" != whole &&
	checkpoint cap 20 4 &&
	(cd cap && "$TENPAK" lineage model.safetensors) >lineage.txt &&
	grep -q "not estimated: chain depth 3 over tenpak.maxchain 2" lineage.txt &&
	grep -q "choice: whole" lineage.txt &&
	plan_is_push cap model.safetensors whole
'

test_expect_success 'a base only in the store is rebuilt to plan, as the push does' '
	new_repo up &&
	"$TP_GEN" model up/model.safetensors 30 &&
	(cd up && git add . && git commit -qm base && git push -q origin main) &&
	base=$(oid_of up/model.safetensors) &&
	new_repo down &&
	"$TP_GEN" model down/model.safetensors 30 --finetune 31 &&
	git -C down config tenpak.model.safetensors.base "oid:$base" &&
	(cd down && git add . && git commit -qm fine-tune) &&
	plan_is_push down model.safetensors "$base"
'

test_expect_success 'a Hugging Face cache copy that does not hash to its oid is not planned on' '
	new_repo hf &&
	mkdir -p gen hf/finetuned &&
	"$TP_GEN" model gen/base.safetensors 40 &&
	"$TP_GEN" model hf/finetuned/model.safetensors 40 --finetune 41 &&
	blob=$(hf_cache "$TRASH/hfhome" acme/cached-base gen/base.safetensors) &&
	printf "\377\377\377\377" | dd of="$blob" bs=1 seek=4096 conv=notrunc 2>/dev/null &&
	printf "{\"_name_or_path\": \"acme/cached-base\"}\n" >hf/finetuned/config.json &&
	export HF_HOME="$TRASH/hfhome" &&
	(cd hf && git add . && git commit -qm ft &&
	 "$TENPAK" lineage finetuned/model.safetensors) >lineage.txt &&
	grep -q "not estimated: bytes not on this machine or in the store" lineage.txt &&
	plan_is_push hf finetuned/model.safetensors whole
'

test_done
