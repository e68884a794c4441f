#!/usr/bin/env bash
# Owns: proving the end-to-end gateways work. Starts Kannel (scripts/kannel.sh)
# and the SMTP sink (scripts/smtp.sh) with their state in DIR, then:
#   SMS via Kannel's sendsms (each must answer 202 "0: Accepted for delivery"):
#     plain GSM-7 text; Spanish "Avería en su zona — ñ" and Russian
#     "Авария в вашем районе" as UCS-2 (coding=2&charset=UTF-8); 400 x "a",
#     which must reach fakesmsc as 3 concatenated parts; one more with
#     dlr-mask=31 and a dlr-url on a local http.server, which must get the
#     delivery reports type 8 (SMSC ACK) and type 1 (delivered).
#   Then decodes DIR/fakesmsc.log (format: scripts/kannel.sh) and checks every
#   text arrived intact, sends one e-mail with smtplib and checks it is in
#   DIR/smtp.jsonl. Stops everything on exit.
# Usage: scripts/check_gateways.sh DIR   (same env as kannel.sh / smtp.sh)
# Ends with "check_gateways: N passed, 0 failed"; exits 1 on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${1:-}" ]] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$(realpath -m -- "$1")"
mkdir -p "$DIR"
SENDSMS_PORT="${KANNEL_SENDSMS_PORT:-13013}"
PASSWORD="${KANNEL_PASSWORD:-outage-e2e}"
SMTP_PORT="${SMTP_PORT:-2525}"
TO="+34600000001"

die() { echo "check_gateways: FAIL: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"

DLR_PID=""
cleanup() {
  if [[ -n "$DLR_PID" ]]; then kill "$DLR_PID" 2>/dev/null || true; fi
  bash "$REPO/scripts/smtp.sh" stop "$DIR" || true
  bash "$REPO/scripts/kannel.sh" stop "$DIR" || true
}
trap cleanup EXIT

rm -f "$DIR"/{dlr.log,dlr.port,sendsms.tsv}
bash "$REPO/scripts/kannel.sh" start "$DIR" >/dev/null
bash "$REPO/scripts/smtp.sh" start "$DIR" >/dev/null

# The DLR receiver: records each request path; port chosen by the kernel.
python3 - "$DIR" <<'EOF' &
import http.server, sys
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(d + "/dlr.log", "a") as f:
            f.write(self.path + "\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(d + "/dlr.port.tmp", "w").write(str(s.server_address[1]))
__import__("os").rename(d + "/dlr.port.tmp", d + "/dlr.port")
s.serve_forever()
EOF
DLR_PID=$!
for _ in $(seq 50); do [[ -s "$DIR/dlr.port" ]] && break; sleep 0.1; done
[[ -s "$DIR/dlr.port" ]] || die "the DLR receiver did not start"
DLR_PORT="$(cat "$DIR/dlr.port")"

urlenc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# sendsms NAME TEXT [EXTRA-QUERY]: GET sendsms, require 202 + "0: Accepted for delivery".
sendsms() {
  local url out code body
  url="http://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms?username=outage&password=$PASSWORD"
  url+="&from=ExampleTel&to=$(urlenc "$TO")&text=$(urlenc "$2")${3:-}"
  out="$(curl -sS --max-time 10 -w '\n%{http_code}' "$url")" || die "$1: sendsms request failed"
  code="${out##*$'\n'}"; body="${out%$'\n'*}"
  echo "sendsms $1: HTTP $code $body"
  [[ "$code" == 202 && "$body" == "0: Accepted for delivery" ]] \
    || die "$1: expected 202 '0: Accepted for delivery', got $code '$body'"
  printf '%s\t%s\n' "$1" "$code $body" >>"$DIR/sendsms.tsv"
}

LONG="$(printf 'a%.0s' $(seq 400))"
sendsms plain "Outage in your area, ETR 18:30. Ref #42 @home"
sendsms spanish "Avería en su zona — ñ" "&coding=2&charset=UTF-8"
sendsms russian "Авария в вашем районе" "&coding=2&charset=UTF-8"
sendsms long "$LONG"
DLR_URL="http://127.0.0.1:$DLR_PORT/dlr?action_id=dlr-1&type=%d&answer=%A"
sendsms dlr "Delivery report test" "&dlr-mask=31&dlr-url=$(urlenc "$DLR_URL")"

python3 - "$DIR" "$SMTP_PORT" <<'EOF'
import json, smtplib, sys, time, urllib.parse
from email.message import EmailMessage

d, smtp_port = sys.argv[1], int(sys.argv[2])
passed, failed = 0, []

def check(ok, what):
    global passed
    if ok:
        passed += 1
        print("ok   " + what)
    else:
        failed.append(what)
        print("FAIL " + what)

def parts(path):
    """fakesmsc.log -> [(from, to, type, udh bytes|None, payload bytes|str)] (see kannel.sh)."""
    out = []
    for line in open(path, encoding="utf-8", errors="surrogateescape"):
        i = line.find("Got message ")
        if i < 0:
            continue
        wire = line[line.index("<", i) + 1:].rstrip("\n")
        wire = wire[:-1] if wire.endswith(">") else wire
        f = wire.split(" ", 3)
        if len(f) < 4:
            continue  # continuation of a text that held a newline
        frm, to, typ, rest = f
        unq = lambda s: urllib.parse.unquote_to_bytes(s.replace("+", " "))
        if typ == "udh":
            udh, kind, payload = rest.split(" ", 2)
            out.append((frm, to, "udh", unq(udh), unq(payload)))
        elif typ in ("ucs-2", "data"):
            out.append((frm, to, typ, None, unq(rest)))
        else:  # text: raw UTF-8
            out.append((frm, to, typ, None, rest))
    return out

def decode(typ, payload):
    if typ == "text":
        return payload
    if typ == "ucs-2":
        return payload.decode("utf-16-be")
    # "udh ... data" and "data": the coding is not on the line. 7-bit text is
    # UTF-8 and never holds NUL; UCS-2 of Latin/Cyrillic text always does.
    if b"\0" in payload:
        return payload.decode("utf-16-be")
    return payload.decode("utf-8")

def messages(ps):
    """Join concatenated parts (UDH 05 00 03 ref total seq) into whole texts."""
    msgs, groups = [], {}
    for frm, to, typ, udh, payload in ps:
        if typ == "udh" and len(udh) == 6 and udh[:3] == b"\x05\x00\x03":
            ref, total, seq = udh[3], udh[4], udh[5]
            g = groups.setdefault((frm, to, ref, total), {})
            g[seq] = payload
            if len(g) == total:
                whole = b"".join(g[k] for k in sorted(g))
                msgs.append({"to": to, "parts": total, "text": decode("data", whole)})
        else:
            msgs.append({"to": to, "parts": 1, "text": decode(typ, payload)})
    return msgs

expected = {
    "plain": "Outage in your area, ETR 18:30. Ref #42 @home",
    "spanish": "Avería en su zona — ñ",
    "russian": "Авария в вашем районе",
    "long": "a" * 400,
    "dlr": "Delivery report test",
}
log = d + "/fakesmsc.log"
deadline = time.time() + 15
while True:
    ps = parts(log)
    if len(ps) >= 7 or time.time() > deadline:  # 1+1+1+3+1 parts
        break
    time.sleep(0.2)
check(len(ps) == 7, f"fakesmsc got 7 SMS parts (got {len(ps)})")
msgs = messages(ps)
json.dump(msgs, open(d + "/fakesmsc.decoded.json", "w"), ensure_ascii=False, indent=1)
texts = [m["text"] for m in msgs]
for name, text in expected.items():
    check(text in texts, f"{name} text arrived intact: {text[:40]!r}")
types = [p[2] for p in ps]
check(types.count("ucs-2") == 2, "the Spanish and Russian texts went as ucs-2")
long_parts = [p for p in ps if p[2] == "udh"]
check(len(long_parts) == 3 and [p[3][3:] for p in long_parts] == [bytes([long_parts[0][3][3], 3, s]) for s in (1, 2, 3)],
      "the 400-character text came as 3 concatenated parts (UDH 05 00 03 ref 03 01..03)")
check(all(m["to"] == "+34600000001" for m in msgs), "every SMS went to +34600000001")

deadline = time.time() + 10
dlrs = []
while time.time() < deadline:
    try:
        dlrs = [urllib.parse.parse_qs(urllib.parse.urlsplit(l.strip()).query) for l in open(d + "/dlr.log")]
    except FileNotFoundError:
        dlrs = []
    if {"1", "8"} <= {q.get("type", [""])[0] for q in dlrs}:
        break
    time.sleep(0.2)
kinds = sorted(q.get("type", [""])[0] for q in dlrs)
check({"1", "8"} <= set(kinds) and all(q.get("action_id") == ["dlr-1"] for q in dlrs),
      f"DLRs posted back to dlr-url: types {kinds} (8 = SMSC ACK, 1 = delivered)")

marker = "e2e-%d" % time.time_ns()
m = EmailMessage()
m["From"] = "Example Telecom <noreply@example.net>"
m["To"] = "customer@example.com"
m["Subject"] = "Avería en su zona " + marker
m.set_content("Estimado cliente: avería — ñ. " + marker)
with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
    s.send_message(m)
deadline = time.time() + 10
recs = []
while time.time() < deadline:
    recs = [json.loads(l) for l in open(d + "/smtp.jsonl", encoding="utf-8") if l.strip()]
    if recs:
        break
    time.sleep(0.1)
check(len(recs) == 1, f"smtp.jsonl holds the one mail (got {len(recs)})")
if recs:
    r = recs[0]
    check(r["mail_from"] == "noreply@example.net" and r["rcpt_tos"] == ["customer@example.com"],
          f"envelope: {r['mail_from']} -> {r['rcpt_tos']}")
    check(marker in r["data"] and "Subject:" in r["data"] and r["received_at"],
          "the raw message (headers and body) is in data")

print(f"check_gateways: {passed} passed, {len(failed)} failed")
if failed:
    print("check_gateways: FAIL: " + "; ".join(failed), file=sys.stderr)
    print(f"check_gateways: logs in {d} (fakesmsc.log, access.log, dlr.log, smtp.jsonl)", file=sys.stderr)
    sys.exit(1)
EOF
