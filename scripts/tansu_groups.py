#!/usr/bin/env python3
"""Owns: a probe of Tansu's consumer-group coordinator with two librdkafka
members (issue 22): does a survivor get every partition when the other
member stops cleanly (LeaveGroup) or is killed (kill -9)?

Not a project dependency; uses confluent-kafka (the rdkafka crate's C
library) from a throwaway venv, as scripts/kafka_smoke.py does:
    python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install confluent-kafka
    /tmp/kvenv/bin/python scripts/tansu_groups.py BOOTSTRAP STRATEGY MEMBERSHIP STOP WHO [PARTITIONS]
STRATEGY: range | roundrobin | cooperative-sticky | default (librdkafka's);
MEMBERSHIP: dynamic | static (group.instance.id); STOP: close | kill9;
WHO: leader | follower (the group leader, or the other, once the two share
the partitions) | early (member A, 0.7 s after B joined: mid-rebalance;
EARLY=seconds changes it). Prints one JSON line: seconds to the split and
to the takeover, result OK or STUCK (no takeover within 45 s). Each
member's librdkafka cgrp log is kept under $TANSU_PROBE_LOGS (default
/tmp/tansu-probe). BENCHMARKS.md has the table.
"""
import sys
if len(sys.argv) > 1 and sys.argv[1] == "member":
    sys.argv = sys.argv[1:]
    import json, os, signal, sys, time
    from confluent_kafka import Consumer
    boot, topic, group, name, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    conf = {"bootstrap.servers": boot, "group.id": group, "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000, "auto.offset.reset": "earliest", "debug": "cgrp"}
    conf.update(extra)
    c = Consumer(conf)
    def on_assign(c_, ps):
        print(json.dumps({"t": time.time(), "name": name, "assigned": sorted(p.partition for p in ps)}), flush=True)
    c.subscribe([topic], on_assign=on_assign)
    stop = False
    def term(*_):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, term)
    last = None
    while not stop:
        c.poll(0.2)
        a = sorted(tp.partition for tp in c.assignment())
        if a != last:
            print(json.dumps({"t": time.time(), "name": name, "parts": a}), flush=True)
            last = a
    c.close()
    print(json.dumps({"t": time.time(), "name": name, "closed": True}), flush=True)
    sys.exit(0)
import json, os, signal, subprocess, sys, time, uuid
from confluent_kafka.admin import AdminClient, NewTopic
boot, strategy, static, how, who = sys.argv[1:6]
assert boot.startswith(("127.", "localhost")), "loopback brokers only"
P = int(sys.argv[6]) if len(sys.argv) > 6 else 4
D = os.environ.get("TANSU_PROBE_LOGS", "/tmp/tansu-probe")
run = uuid.uuid4().hex[:6]
topic, group = f"t{run}", f"g{run}"
a = AdminClient({"bootstrap.servers": boot})
a.create_topics([NewTopic(topic, P, 1)])["%s" % topic].result()
logdir = f"{D}/{strategy}-{static}-{how}-{who}-p{P}-{run}"; os.makedirs(logdir)
procs = {}
def start(n):
    extra = {} if strategy == "default" else {"partition.assignment.strategy": strategy}
    if static == "static":
        extra["group.instance.id"] = f"{group}-{n}"
    out = open(f"{logdir}/{n}.out", "w"); err = open(f"{logdir}/{n}.err", "w")
    procs[n] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "member", boot, topic, group, n, json.dumps(extra)], stdout=out, stderr=err)
def parts(n):
    last = None
    try:
        for l in open(f"{logdir}/{n}.out"):
            j = json.loads(l)
            if "parts" in j: last = j["parts"]
    except FileNotFoundError: pass
    return last or []
def assigned(n):
    try:
        return any("assigned" in l for l in open(f"{logdir}/{n}.out"))
    except FileNotFoundError: return False
def leader():
    # librdkafka cgrp log: last "elected leader" line wins
    res = None; best = 0
    for n in procs:
        for i, l in enumerate(open(f"{logdir}/{n}.err", errors="replace")):
            if "I am elected leader" in l or "elected leader" in l:
                res = n
    return res
def wait(cond, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond(): return round(time.monotonic() - t0, 1)
        time.sleep(0.2)
    return None
res = {"P": P, "strategy": strategy, "static": static, "stop": how, "who": who, "logs": logdir}
start("A")
res["A_alone_s"] = wait(lambda: len(parts("A")) == P, 40)
start("B")
if who == "early":
    time.sleep(float(os.environ.get("EARLY", "0.7")))
    res["victim"] = "A"
    procs["A"].send_signal(signal.SIGTERM if how == "close" else signal.SIGKILL)
    t = wait(lambda: len(parts("B")) == P and procs["A"].poll() is not None, 45)
    res["takeover_s"] = t; res["result"] = "OK" if t is not None else "STUCK"; res["survivor_parts"] = parts("B")
    for p in procs.values():
        if p.poll() is None: p.send_signal(signal.SIGTERM)
    print(json.dumps(res), flush=True); sys.exit(0)
res["split_s"] = wait(lambda: assigned("B") and sorted(parts("A") + parts("B")) == list(range(P)), 40)
res["split"] = [parts("A"), parts("B")]
L = leader(); res["leader"] = L
if res["split_s"] is None:
    res["result"] = "NO SPLIT"
else:
    time.sleep(2)
    victim = (L if who == "leader" else ({"A": "B", "B": "A"}[L])) if L else "A"
    survivor = {"A": "B", "B": "A"}[victim]
    res["victim"] = victim
    procs[victim].send_signal(signal.SIGTERM if how == "close" else signal.SIGKILL)
    t = wait(lambda: len(parts(survivor)) == P and procs[victim].poll() is not None, 45)
    res["takeover_s"] = t
    res["survivor_parts"] = parts(survivor)
    res["result"] = "OK" if t is not None else "STUCK"
for p in procs.values():
    if p.poll() is None: p.send_signal(signal.SIGTERM)
for p in procs.values():
    try: p.wait(10)
    except Exception: p.kill()
print(json.dumps(res), flush=True)
