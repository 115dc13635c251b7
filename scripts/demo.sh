#!/usr/bin/env bash
# A local federation on loopback, on the embedded defaults: certificates made,
# the hub started, three nodes (NL, DE, FR) and three agencies (police DE,
# police NL, Europol) run as processes, a few reports routed (one of them a
# sighting of an earlier case), what was delivered to whom shown, a standard
# notice sent by node DE to its hosting provider's client, the takedown
# deadline missed and escalated, and an operator's session (rules, explain,
# stats). Everything lives in ./demo-federation (removed first). No imagery:
# the "files" are generated stripes and random bytes. One change from the
# defaults, for the demonstration only: the hub's clock is adjustable, so
# that the operator can move it past a 24-hour deadline.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --quiet
BIN=target/debug
DIR=demo-federation
PORT=${MELDNET_DEMO_PORT:-7443}
rm -rf "$DIR"
mkdir -p "$DIR/files"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. meldnet-certs init: CA, certificates with SPIFFE ids, signing keys, configs"
$BIN/meldnet-certs init --dir "$DIR/fed" --federation eu.meldnet.test \
  --nodes NL,DE,FR --agencies DE/bka,NL/politie,EU/europol --hub-addr "127.0.0.1:$PORT"

printf '\n# Demonstration only: lets an operator move the clock past a deadline.\n[clock]\nadjustable = true\n' >> "$DIR/fed/hub/hub.toml"

say "2. meldnet-hub serve (mTLS, TLS 1.3, client certificates required)"
$BIN/meldnet-hub serve --config "$DIR/fed/hub/hub.toml" --ready-file "$DIR/hub.ready" 2> "$DIR/hub.log" &
HUB=$!
trap 'kill $HUB 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -f "$DIR/hub.ready" ] && break; sleep 0.05; done
[ -f "$DIR/hub.ready" ] || { cat "$DIR/hub.log"; exit 1; }
echo "hub listening on $(cat "$DIR/hub.ready"), log in $DIR/hub.log"

# Made-up pictures (coloured stripes, never real imagery), written as PNG by
# the Python standard library, so that the nodes compute their PDQ hashes.
python3 - "$DIR/files" <<'PY'
import struct, sys, zlib
def png(path, seed, w=160, h=120):
    rows = b"".join(b"\0" + bytes(
        v for x in range(w) for v in ((x * 255 // w), (y * 255 // h) ^ seed, ((x // (4 + seed)) % 2) * 255))
        for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
for i in range(1, 5):
    png(f"{sys.argv[1]}/item{i}.png", i * 3)
PY
head -c 50000 /dev/urandom > "$DIR/files/clip.mp4"

say "3. The known-hash list: an operator imports a list at the hub, the nodes follow it"
ITEM2=$($BIN/meldnet-node hash --json "$DIR/files/item2.png" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha256"])')
printf 'sha256,category\n%s,1\n%s,2\nnot-a-hash,1\n' "$ITEM2" "$(printf 'b%.0s' $(seq 1 64))" > "$DIR/list.csv"
$BIN/meldnet-hub list import --operator "$DIR/fed/operators/admin/operator.toml" --source-country NL "$DIR/list.csv"
for n in NL DE FR; do
  echo "-- node $n: list sync"
  $BIN/meldnet-node list sync --config "$DIR/fed/nodes/$n/node.toml"
done

say "4. Hotlines report (files are hashed locally; only hashes and metadata leave; items marked known or new)"
echo "-- NL: material hosted in DE"
$BIN/meldnet-node report new --config "$DIR/fed/nodes/NL/node.toml" --url https://img.example.de/a/1 \
  --hosting DE --classification baseline --age-group prepubescent --submit "$DIR/files/item1.png" "$DIR/files/item2.png" \
  | tee "$DIR/first.jsonl"
FIRST=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["report_id"])' "$DIR/first.jsonl")
echo "-- FR: the same location, spelled otherwise: a sighting of NL's case, no second notice"
$BIN/meldnet-node report new --config "$DIR/fed/nodes/FR/node.toml" --url 'HTTPS://IMG.example.de:443/a/1/#top' \
  --hosting DE --classification baseline --age-group prepubescent --submit "$DIR/files/item1.png"
echo "-- FR: material hosted in NL, suspect in DE"
$BIN/meldnet-node report new --config "$DIR/fed/nodes/FR/node.toml" --url https://cdn.example.nl/v/9 \
  --hosting NL --suspect DE --classification baseline --age-group pubescent --submit "$DIR/files/clip.mp4"
echo "-- DE: material hosted in the US, no other EU link"
$BIN/meldnet-node report new --config "$DIR/fed/nodes/DE/node.toml" --url https://files.example.com/x \
  --hosting US --classification national --age-group unknown --submit "$DIR/files/item3.png"
echo "-- NL: material hosted in the US, victim located in NL"
$BIN/meldnet-node report new --config "$DIR/fed/nodes/NL/node.toml" --url https://files.example.com/y \
  --hosting US --victim NL --classification baseline --age-group infant-toddler --submit "$DIR/files/item4.png"

say "5. Recipients receive their queues, verify both signatures, store, acknowledge"
AGENCIES="DE-bka NL-politie EU-europol"
for a in $AGENCIES; do
  echo "-- police $a"
  $BIN/meldnet-agency pull --config "$DIR/fed/agencies/$a/agency.toml"
done
for n in NL DE FR; do
  echo "-- node $n inbox"
  $BIN/meldnet-node inbox --config "$DIR/fed/nodes/$n/node.toml"
done

say "6. What was delivered to whom (read back from each delivery log, verified again)"
show() {
  "$@" > "$DIR/shown.jsonl"
  python3 - "$DIR/shown.jsonl" "${@: -1}" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
who = sys.argv[2].split("/fed/", 1)[-1].rsplit("/", 1)[0]
print(f"{who}: {len(lines)} report(s)")
for d in lines:
    print(f"   {d['report_id']}  from {d['origin'].rsplit('/', 1)[-1]}  {d['url']}")
    case = d['decision'].get('case') or {}
    if case:
        print(f"      {case['kind'].replace('DECISION_KIND_', '').lower()} of case {case['case_id']}")
    for r in d['decision']['recipients']:
        print(f"      -> {r['identity']} ({r['purpose'].replace('PURPOSE_', '').lower()}): {r['reason']}")
    print("      " + next((x for x in d['decision']['reasons'] if x.startswith('hash list')), ''))
PY
}
for a in $AGENCIES; do
  show $BIN/meldnet-agency received --config "$DIR/fed/agencies/$a/agency.toml"
done
for n in NL DE FR; do
  show $BIN/meldnet-node received --config "$DIR/fed/nodes/$n/node.toml"
done

say "7. Notice-and-takedown: node DE sends the hosting provider a standard notice by itself; the provider does not remove it in 24 hours"
# Node DE's provider register: who hosts img.example.de. `serve` then reads
# its inbox, makes one notice per location it must act on, and pushes it.
cat >> "$DIR/fed/nodes/DE/node.toml" <<'TOML'

[notices]
[[notices.providers]]
name = "example-hosting"
asn = 64500
hostnames = ["img.example.de"]
TOML
$BIN/meldnet-certs provider --node-dir "$DIR/fed/nodes/DE" --name example-hosting --out "$DIR/providers"
$BIN/meldnet-node serve --config "$DIR/fed/nodes/DE/node.toml" --ready-file "$DIR/node-DE.ready" 2> "$DIR/node-DE.log" &
NODE=$!
trap 'kill $HUB $NODE 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -s "$DIR/node-DE.ready" ] && break; sleep 0.05; done
NODE_PORT=$(cut -d: -f2 < "$DIR/node-DE.ready")
cat > "$DIR/providers/provider.toml" <<TOML
keyring = "../fed/keyring.toml"
notices_dir = "notices"

[node]
address = "127.0.0.1:$NODE_PORT"
server_name = "hashcheck.de.eu.meldnet.test"

[tls]
ca = "ca.pem"
cert = "example-hosting.pem"
key = "example-hosting.key"
TOML
echo "-- the provider's client receives the notice, verifies it with node DE's key, stores it, acknowledges it"
for _ in $(seq 1 20); do
  GOT=$($BIN/meldnet-provider receive --config "$DIR/providers/provider.toml" 2>/dev/null || true)
  [ -n "$GOT" ] && break
done
printf '%s\n' "$GOT"
$BIN/meldnet-provider verify --keyring "$DIR/fed/keyring.toml" "$DIR"/providers/notices/*.json
sleep 1.5   # node DE records "notice sent" at the hub by itself
OP="$DIR/fed/operators/admin/operator.toml"
$BIN/meldnet-hub admin --operator "$OP" advance-clock --hours 25
sleep 1.5
echo "-- police DE receive the escalation"
$BIN/meldnet-agency pull --config "$DIR/fed/agencies/DE-bka/agency.toml"
$BIN/meldnet-agency received --config "$DIR/fed/agencies/DE-bka/agency.toml" "$FIRST" | python3 -c '
import json, sys
for l in sys.stdin:
    d = json.loads(l)["decision"]
    if d["kind"] == "DECISION_KIND_ESCALATION":
        print("escalation:", "; ".join(d["reasons"]))'

say "8. An operator's session: the rules in force, one report explained, statistics"
echo "\$ meldnet-hub admin --operator $OP rules   (first lines)"
# Read whole, then cut: a pipe closed early by `head` would fail the command.
RULES=$($BIN/meldnet-hub admin --operator "$OP" rules)
printf '%s\n' "$RULES" | head -n 8
echo "\$ meldnet-hub admin --operator $OP explain $FIRST"
$BIN/meldnet-hub admin --operator "$OP" explain "$FIRST"
echo "\$ meldnet-hub admin --operator $OP stats"
$BIN/meldnet-hub admin --operator "$OP" stats

say "9. A hosting provider in DE asks node DE whether uploads are known (HTTP/JSON over mTLS)"
if command -v curl > /dev/null; then
  curl -sS --cacert "$DIR/providers/ca.pem" --cert "$DIR/providers/example-hosting.pem" --key "$DIR/providers/example-hosting.key" \
    --resolve "hashcheck.de.eu.meldnet.test:$NODE_PORT:127.0.0.1" -H 'content-type: application/json' \
    -d "{\"queries\": [{\"sha256\": \"$ITEM2\"}, {\"sha256\": \"$(printf 'c%.0s' $(seq 1 64))\"}]}" \
    "https://hashcheck.de.eu.meldnet.test:$NODE_PORT/v1/check"
  echo
else
  echo "(curl not installed: skipped)"
fi
kill $NODE; wait $NODE 2>/dev/null || true

say "10. Provenance, offline: meldnet-agency verify with public keys only"
$BIN/meldnet-agency verify --keyring "$DIR/fed/keyring.toml" "$DIR/fed/agencies/DE-bka/deliveries/deliveries.log"

say "11. The hub's audit chain"
kill $HUB; wait $HUB 2>/dev/null || true
trap - EXIT
$BIN/meldnet-hub audit verify --config "$DIR/fed/hub/hub.toml"
