#!/bin/sh
# What the store holds, said plainly: fsck vouches for the store alone,
# read-only commands never create a store, a missing object names the store,
# `tenpak lineage` and `tenpak store show` report stored objects, and every
# --json output is JSON whatever the store's manifests hold.
. "$(dirname "$0")/lib.sh"

command -v python3 >/dev/null || { echo "skip: python3 is needed to parse --json"; exit 77; }

export TENPAK_STORE="$TRASH/store"

test_expect_success 'setup: a fine-tune of a base from the HF cache, and a plain file' '
	"$TENPAK" install --remote "$TRASH" >/dev/null &&
	new_repo hf &&
	mkdir -p hf/finetuned gen &&
	"$TP_GEN" model gen/base.safetensors 21 &&
	"$TP_GEN" model hf/finetuned/model.safetensors 21 --finetune 22 &&
	hf_cache "$TRASH/hfhome" acme/cached-base gen/base.safetensors >/dev/null &&
	printf "{\"_name_or_path\": \"acme/cached-base\", \"base_model\": \"acme/unknown-model\"}\n" \
		>hf/finetuned/config.json &&
	gen_bytes hf/notes.bin 300000 23 &&
	(cd hf && git add . && git commit -qm ft &&
	 HF_HOME="$TRASH/hfhome" git push -q origin main) &&
	test "$(count_objects "$TENPAK_STORE")" = 3
'

BASE_OID=$(oid_of "$TRASH/gen/base.safetensors")
FT_OID=$(oid_of "$TRASH/hf/finetuned/model.safetensors")
BIN_OID=$(oid_of "$TRASH/hf/notes.bin")

test_expect_success 'fsck rebuilds from the store alone, never from the HF cache' '
	HF_HOME="$TRASH/hfhome" "$TENPAK" store fsck >fsck.txt &&
	grep -q "3 objects checked, 3 ok" fsck.txt &&
	obj=$(store_object "$TENPAK_STORE" "$BASE_OID") &&
	mv "$obj" saved-base &&
	test_must_fail env HF_HOME="$TRASH/hfhome" "$TENPAK" store fsck >fsck.txt &&
	grep -q "^$FT_OID: .*$BASE_OID" fsck.txt &&
	grep -q "2 objects checked, 1 ok, 1 with problems" fsck.txt &&
	mv saved-base "$obj"
'

test_expect_success 'read-only commands on a store that does not exist fail and create nothing' '
	for cmd in "stats" "fsck" "show $FT_OID"; do
		test_must_fail env TENPAK_STORE="$TRASH/no/such/store" "$TENPAK" store $cmd 2>err &&
		grep -q "no store at $TRASH/no/such/store.*tenpak install --store" err &&
		test ! -e "$TRASH/no" || return 1
	done &&
	test_must_fail "$TENPAK" store stats --store "file://$TRASH/no/such/store" 2>err &&
	grep -q "no store at file://" err &&
	test ! -e "$TRASH/no" &&
	(cd hf && TENPAK_STORE="$TRASH/no/such/store" "$TENPAK" lineage >../out 2>../err) &&
	grep -q "no store at" err &&
	grep -q "stored: not in the store" out &&
	test ! -e "$TRASH/no"
'

test_expect_success 'a clone from an empty store names the store and the settings' '
	mkdir empty-store &&
	test_must_fail env TENPAK_STORE="$TRASH/empty-store" git clone hf.git from-empty 2>err &&
	grep "is not in store $TRASH/empty-store: is this the right store? (tenpak.store / TENPAK_STORE)" err &&
	grep -q "object $FT_OID is not in store" err &&
	test "$(count_objects empty-store)" = 0
'

test_expect_success 'a clone from a store that does not exist fails and creates none' '
	test_must_fail env TENPAK_STORE="$TRASH/typo/store" GIT_TRACE=1 \
		git clone hf.git from-typo 2>err &&
	grep -q "no store at $TRASH/typo/store" err &&
	test ! -e "$TRASH/typo"
'

test_expect_success 'lineage shows what the store holds next to the estimate' '
	cd hf &&
	mkdir local &&
	"$TP_GEN" model local/model.safetensors 24 &&
	git add local && git commit -qm "not pushed" &&
	HF_HOME="$TRASH/hfhome" "$TENPAK" lineage >../lineage.txt &&
	HF_HOME="$TRASH/hfhome" "$TENPAK" lineage --json finetuned/model.safetensors >../ft.json &&
	cd .. &&
	sed -n "/^finetuned/,/^[^ ]/p" lineage.txt >ft.txt &&
	grep -q "stored: delta against 1 base, depth 1" ft.txt &&
	grep -q "base $(echo "$BASE_OID" | cut -c1-12)" ft.txt &&
	grep -q "reason: whole: estimated" ft.txt &&
	sed -n "/^local/,/^[^ ]/p" lineage.txt | grep -q "stored: not in the store" &&
	test "$(json_get "d[\"stored\"][\"kind\"], d[\"stored\"][\"depth\"], d[\"stored\"][\"bases\"][0][\"oid\"]" <ft.json)" = \
		"delta 1 $BASE_OID" &&
	test "$(json_get "d[\"stored\"][\"stored_bytes\"] < d[\"size\"] / 2" <ft.json)" = True &&
	test "$(json_get "d[\"stored\"][\"source\"], d[\"candidates\"][0][\"source\"]" <ft.json)" = \
		"metadata metadata"
'

test_expect_success 'lineage lists a name that resolves to nothing, with the key to fix it' '
	grep -q "unresolved \"acme/unknown-model\" (finetuned/config.json: base_model)" ft.txt &&
	grep -q "git config tenpak.acme/unknown-model.model <path|oid:...>" ft.txt &&
	test "$(json_get "d[\"unresolved\"][0][\"key\"], len(d[\"unresolved\"])" <ft.json)" = \
		"tenpak.acme/unknown-model.model 1" &&
	cd hf &&
	git config tenpak.acme/unknown-model.model local &&
	HF_HOME="$TRASH/hfhome" "$TENPAK" lineage --json finetuned/model.safetensors >../fixed.json &&
	git config --unset tenpak.acme/unknown-model.model &&
	cd .. &&
	test "$(json_get "len(d[\"unresolved\"]), d[\"candidates\"][1][\"evidence\"]" <fixed.json)" = \
		"0 finetuned/config.json: base_model = acme/unknown-model (tenpak.acme/unknown-model.model)"
'

test_expect_success 'store show: a delta object and its chain' '
	"$TENPAK" store show "$FT_OID" >show.txt &&
	grep -q "^kind: *delta, codec version 1" show.txt &&
	grep -q "^depth: *1" show.txt &&
	grep -q "^signature: *unsigned" show.txt &&
	grep -q "^evidence: *finetuned/config.json: _name_or_path = acme/cached-base" show.txt &&
	grep -q "^  $BASE_OID (.*): whole-codec, " show.txt &&
	grep -q "^chain: *2 objects" show.txt &&
	"$TENPAK" store show --json "$FT_OID" >show.json &&
	test "$(json_get "d[\"kind\"], d[\"depth\"], d[\"bases\"][0][\"kind\"], d[\"bases\"][0][\"depth\"], d[\"chain\"][\"complete\"]" <show.json)" = \
		"delta 1 whole-codec 0 True" &&
	total=$(($(wc -c <"$(store_object "$TENPAK_STORE" "$FT_OID")") + $(wc -c <"$(store_object "$TENPAK_STORE" "$BASE_OID")"))) &&
	test "$(json_get "d[\"chain\"][\"stored_bytes\"]" <show.json)" = "$total"
'

test_expect_success 'store show: whole objects' '
	"$TENPAK" store show --json "$BASE_OID" >base.json &&
	test "$(json_get "d[\"kind\"], d[\"bases\"], d[\"reason\"]" <base.json)" = \
		"whole-codec [] whole: no base candidate" &&
	"$TENPAK" store show "$BIN_OID" >bin.txt &&
	grep -q "^kind: *whole-zstd" bin.txt &&
	grep -q "^size: *300000 bytes" bin.txt &&
	grep -q "^signature: *none (no manifest)" bin.txt
'

test_expect_success 'store show: an absent object, a missing base' '
	absent=$(printf absent | sha256sum | cut -d" " -f1) &&
	test_must_fail "$TENPAK" store show "$absent" >out 2>err &&
	test ! -s out &&
	grep -q "object $absent is not in store $TENPAK_STORE: is this the right store?" err &&
	test_must_fail "$TENPAK" store show not-an-oid 2>err &&
	grep -q "not an oid" err &&
	obj=$(store_object "$TENPAK_STORE" "$BASE_OID") &&
	mv "$obj" saved-base &&
	test_must_fail "$TENPAK" store show --json "$FT_OID" >show.json &&
	mv saved-base "$obj" &&
	test "$(json_get "d[\"chain\"][\"complete\"], \"is not in store\" in d[\"bases\"][0][\"error\"]" <show.json)" = \
		"False True"
'

# tamper_signer OBJECT: put a quote and a backslash into the signer of the
# object's manifest, keeping its length (the signature then fails).
tamper_signer() {
	chmod u+w "$1" &&
	perl -0777 -pi -e 's/("key":"ed25519:)..../$1\\"\\\\/' "$1"
}
# What the manifest then holds, as JSON text, and the two characters it
# decodes to, as a Python literal.
TAMPERED='"key":"ed25519:\"\\'
QUOTE_BACKSLASH='"\"\\"'

test_expect_success 'fsck, stats and show --json stay JSON whatever a manifest holds' '
	export TENPAK_STORE="$TRASH/store-signed" &&
	"$TENPAK" key generate --out "$TRASH/key" >/dev/null 2>&1 &&
	new_repo signed &&
	"$TP_GEN" model signed/model.safetensors 25 &&
	(cd signed && git config tenpak.signingkey "$TRASH/key" &&
	 git add . && git commit -qm m && git push -q origin main) &&
	oid=$(oid_of signed/model.safetensors) &&
	tamper_signer "$(store_object "$TENPAK_STORE" "$oid")" &&
	grep -a -q -F "$TAMPERED" "$(store_object "$TENPAK_STORE" "$oid")" &&
	test_must_fail "$TENPAK" store fsck --json >fsck.json &&
	test "$(json_get "d[\"objects\"][0][\"signature\"], d[\"ok\"]" <fsck.json)" = "bad signature 0" &&
	json_true "d[\"objects\"][0][\"signer\"][8:10] == $QUOTE_BACKSLASH" <fsck.json &&
	"$TENPAK" store show --json "$oid" >show.json &&
	test "$(json_get "d[\"signature\"]" <show.json)" = "bad signature" &&
	json_true "d[\"signer\"][8:10] == $QUOTE_BACKSLASH" <show.json &&
	"$TENPAK" store stats --json >stats.json &&
	test "$(json_get "d[\"objects\"], d[\"store\"]" <stats.json)" = "1 $TENPAK_STORE"
'

test_done
