#!/bin/sh
# Signed manifests: keys, signing on push, tenpak.verify and
# tenpak.trustedkeys on clone, tampering, and fsck's signature report.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/lib.sh"

export TENPAK_STORE="$TRASH/store"

test_expect_success 'key generate writes a private key and prints the public one' '
	"$TENPAK" key generate --out "$TRASH/k1" >pub1 2>log &&
	grep -q "^ed25519:" pub1 &&
	test "$(stat -c %a "$TRASH/k1")" = 600 &&
	test "$("$TENPAK" key show "$TRASH/k1")" = "$(cat pub1)" &&
	test_must_fail "$TENPAK" key generate --out "$TRASH/k1" 2>err &&
	grep -q "already exists" err &&
	"$TENPAK" key generate >pub-default 2>/dev/null &&
	test -f "$XDG_CONFIG_HOME/tenpak/signing.key" &&
	"$TENPAK" key generate --out "$TRASH/k2" >pub2 2>/dev/null &&
	! cmp -s pub1 pub2
'

test_expect_success 'a key readable by others is refused' '
	cp "$TRASH/k1" "$TRASH/k-open" && chmod 644 "$TRASH/k-open" &&
	test_must_fail "$TENPAK" key show "$TRASH/k-open" 2>err &&
	grep -q "readable by others" err
'

test_expect_success 'push signs every manifest with tenpak.signingkey' '
	"$TENPAK" install --remote "$TRASH" >/dev/null &&
	new_repo signed &&
	mkdir -p signed/base signed/finetuned &&
	"$TP_GEN" model signed/base/model.safetensors 5 &&
	"$TP_GEN" model signed/finetuned/model.safetensors 5 --finetune 6 &&
	printf "{\"_name_or_path\": \"base\"}\n" >signed/finetuned/config.json &&
	(cd signed && git config tenpak.signingkey "$TRASH/k1" &&
	 git add . && git commit -qm models && git push -q origin main) &&
	"$TENPAK" store fsck --json >fsck.json &&
	test "$(grep -o "\"signature\":\"signed\"" fsck.json | wc -l)" = 2 &&
	grep -q "\"signer\":\"$(cat pub1)\"" fsck.json
'

test_expect_success 'clone with tenpak.verify required and the signer trusted' '
	git config --global tenpak.verify required &&
	git config --global tenpak.trustedkeys "$(cat pub2), $(cat pub1)" &&
	git clone -q signed.git ok-clone &&
	cmp signed/finetuned/model.safetensors ok-clone/finetuned/model.safetensors &&
	"$TENPAK" store fsck >fsck.txt &&
	test "$(grep -c "signed, trusted by" fsck.txt)" = 2
'

test_expect_success 'a signer not in tenpak.trustedkeys is refused, by oid' '
	git config --global tenpak.trustedkeys "$(cat pub2)" &&
	test_must_fail git clone -q signed.git untrusted 2>err &&
	grep -q "not in tenpak.trustedkeys" err &&
	ft=$(oid_of signed/finetuned/model.safetensors) &&
	base=$(oid_of signed/base/model.safetensors) &&
	grep -q -e "$ft" -e "$base" err &&
	! cmp -s signed/finetuned/model.safetensors untrusted/finetuned/model.safetensors
'

test_expect_success 'a tampered manifest fails its signature' '
	git config --global tenpak.trustedkeys "$(cat pub1)" &&
	oid=$(oid_of signed/finetuned/model.safetensors) &&
	obj=$(store_object "$TENPAK_STORE" "$oid") &&
	cp "$obj" saved && chmod u+w "$obj" &&
	perl -pi -e "s/\"depth\":1/\"depth\":2/" "$obj" &&
	! cmp -s saved "$obj" &&
	test_must_fail git clone -q signed.git tampered 2>err &&
	grep -q "does not verify" err &&
	test_must_fail "$TENPAK" store fsck >fsck.txt &&
	grep -q "^$oid: .*does not verify" fsck.txt &&
	cp saved "$obj"
'

test_expect_success 'unsigned manifests: refused when required, fine with if-signed' '
	export TENPAK_STORE="$TRASH/store-unsigned" &&
	new_repo plain &&
	"$TP_GEN" model plain/model.safetensors 8 &&
	(cd plain && git add . && git commit -qm m && git push -q origin main) &&
	test_must_fail git clone -q plain.git refused 2>err &&
	grep -q "unsigned and tenpak.verify is required" err &&
	git config --global tenpak.verify if-signed &&
	git clone -q plain.git accepted &&
	cmp plain/model.safetensors accepted/model.safetensors &&
	"$TENPAK" store fsck >fsck.txt &&
	grep -q "unsigned" fsck.txt
'

test_expect_success 'required without trusted keys is a configuration error' '
	git config --global tenpak.verify required &&
	git config --global --unset tenpak.trustedkeys &&
	test_must_fail "$TENPAK" store fsck 2>err &&
	grep -q "lists no key" err &&
	git config --global tenpak.verify off
'

test_done
