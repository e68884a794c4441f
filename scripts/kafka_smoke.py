#!/usr/bin/env python3
"""Owns: a manual smoke test of the Kafka features the pipeline relies on,
run against a broker on loopback (normally Tansu from scripts/tansu.sh).

Uses confluent-kafka (librdkafka, the same C library as the rdkafka crate),
which is not a project dependency; install it in a throwaway venv:
    python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install confluent-kafka
    /tmp/kvenv/bin/python scripts/kafka_smoke.py "$(scripts/tansu.sh start | tail -n1)"
Prints PASS/FAIL per feature. Exits 1 if a core check fails (topic creation,
produce, group consume, offset commit); the others are reported as INFO.
"""
import sys
import time
import uuid

from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, NewPartitions, NewTopic,
                                   OffsetSpec)

BOOT = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:19092"
assert BOOT.startswith(("127.", "localhost")), "loopback brokers only"
CORE = {"create_topics", "metadata", "produce", "group_consume", "commit",
        "committed", "group_resume"}
RUN = uuid.uuid4().hex[:8]
results = []


def check(name):
    def deco(fn):
        t0 = time.monotonic()
        try:
            detail = fn() or ""
            ok = True
        except Exception as e:  # report every failure, keep going
            detail, ok = f"{type(e).__name__}: {e}", False
        dt = time.monotonic() - t0
        tag = "PASS" if ok else ("FAIL" if name in CORE else "INFO-FAIL")
        results.append((name, ok))
        print(f"{tag:9} {name:20} {dt:6.2f}s  {detail}", flush=True)
        return fn
    return deco


_ADMIN = []


def admin():  # one long-lived client: futures fail if their client is freed
    if not _ADMIN:
        _ADMIN.append(AdminClient({"bootstrap.servers": BOOT}))
    return _ADMIN[0]


def produce(conf, topic, n, key_prefix="k", txn=None):
    p = Producer({"bootstrap.servers": BOOT, **conf})
    errs = []

    def dr(err, msg):
        if err:
            errs.append(err)
    if txn:
        p.init_transactions(10)
        p.begin_transaction()
    for i in range(n):
        p.produce(topic, key=f"{key_prefix}{i}", value=f"v{i}",
                  headers=[("h", f"x{i}".encode())], on_delivery=dr)
    if txn:
        p.flush(15)  # records reach the log before the commit/abort marker
    if txn == "commit":
        p.commit_transaction(10)
    elif txn == "abort":
        p.abort_transaction(10)
    left = p.flush(15)
    if left or errs:
        raise RuntimeError(f"undelivered={left} errors={errs[:3]}")
    return p


def consume(group, topics, want, extra=None, timeout=30):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group,
                  "session.timeout.ms": 6000, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **(extra or {})})
    c.subscribe(topics)
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        got.append(m)
    return c, got


def consume_more(c, secs=2.0):
    """Anything beyond what was expected, within secs."""
    extra, deadline = [], time.monotonic() + secs
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            extra.append(m)
    return extra


T = f"smoke-{RUN}"
G = f"g-{RUN}"
TX = f"smoke-tx-{RUN}"


@check("create_topics")
def _():
    fs = admin().create_topics([NewTopic(T, 3, 1), NewTopic(TX, 1, 1)])
    for f in fs.values():
        f.result(10)


@check("metadata")
def _():
    md = admin().list_topics(T, timeout=10)
    n = len(md.topics[T].partitions)
    if n != 3:
        raise RuntimeError(f"{n} partitions, want 3")
    return f"3 partitions, broker(s) {[str(b) for b in md.brokers.values()]}"


@check("create_dup_topic")
def _():
    try:
        admin().create_topics([NewTopic(T, 3, 1)])[T].result(10)
    except KafkaException as e:
        return f"rejected as expected: {e.args[0].name()}"
    raise RuntimeError("duplicate CreateTopics was accepted")


@check("produce")
def _():
    produce({"acks": "all", "enable.idempotence": False}, T, 10)
    return "10 msgs, acks=all, with headers"


state = {}


@check("group_consume")
def _():
    t0 = time.monotonic()
    c, got = consume(G, [T], 10)
    state["c"], state["got"] = c, got
    if len(got) != 10:
        raise RuntimeError(f"got {len(got)}/10")
    parts = sorted({m.partition() for m in got})
    return f"10/10 in {time.monotonic() - t0:.1f}s, partitions {parts}"


@check("headers")
def _():
    bad = [m for m in state["got"]
           if m.headers() != [("h", f"x{m.key().decode()[1:]}".encode())]]
    if bad:
        raise RuntimeError(f"headers lost/wrong: {bad[0].headers()!r}")
    return "round-tripped"


@check("timestamps")
def _():
    ts = state["got"][0].timestamp()
    return f"type={ts[0]} ts={ts[1]}"


@check("commit")
def _():
    state["c"].commit(asynchronous=False)


@check("committed")
def _():
    tps = [TopicPartition(T, p) for p in range(3)]
    offs = state["c"].committed(tps, timeout=10)
    total = sum(tp.offset for tp in offs if tp.offset >= 0)
    state["c"].close()
    if total != 10:
        raise RuntimeError(f"committed offsets sum {total}, want 10: {offs}")
    return str([(tp.partition, tp.offset) for tp in offs])


@check("group_resume")
def _():
    produce({"acks": "all", "enable.idempotence": False}, T, 2, "r")
    c, got = consume(G, [T], 2, timeout=15)
    got += consume_more(c)
    c.close()
    keys = sorted(m.key().decode() for m in got)
    if keys != ["r0", "r1"]:
        raise RuntimeError(f"after rejoin got {keys}, want only r0,r1")
    return "rejoined group resumed from committed offsets"


@check("list_offsets")
def _():
    a = admin()
    req = {TopicPartition(T, p): OffsetSpec.latest() for p in range(3)}
    latest = {tp.partition: r.offset
              for tp, f in a.list_offsets(req).items() for r in [f.result(10)]}
    req = {TopicPartition(T, p): OffsetSpec.earliest() for p in range(3)}
    earliest = {tp.partition: r.offset
                for tp, f in a.list_offsets(req).items() for r in [f.result(10)]}
    if set(earliest.values()) != {0} or min(latest.values()) < 1:
        raise RuntimeError(f"earliest={earliest} latest={latest}")
    return f"earliest={earliest} latest={latest} (latest: see latest_after_batch)"


@check("latest_after_batch")
def _():
    # Tansu 0.6.0-510f3e2 answers ListOffsets(LATEST) with the last batch's
    # base offset + 1, not the log end, when that batch has several records.
    t = f"{T}-b"
    admin().create_topics([NewTopic(t, 1, 1)])[t].result(10)
    produce({"linger.ms": 50}, t, 5, "b")  # one batch of 5 records
    tp = TopicPartition(t, 0)
    end = admin().list_offsets({tp: OffsetSpec.latest()})[tp].result(10).offset
    c = Consumer({"bootstrap.servers": BOOT, "group.id": G + "b"})
    hw = c.get_watermark_offsets(tp, timeout=10)[1]
    c.close()
    if end != 5 or hw != 5:
        raise RuntimeError(f"after one 5-record batch: ListOffsets latest={end}, "
                           f"watermark high={hw}, want 5")


@check("reset_latest")
def _():
    # New group with auto.offset.reset=latest must see only records produced
    # after it joined (the topic already holds the 5-record batch above).
    c = Consumer({"bootstrap.servers": BOOT, "group.id": G + "L",
                  "session.timeout.ms": 6000, "auto.offset.reset": "latest"})
    c.subscribe([f"{T}-b"])
    deadline = time.monotonic() + 20
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.2)
    time.sleep(1)
    produce({}, f"{T}-b", 1, "new")
    keys = [m.key().decode() for m in consume_more(c, 4)]
    c.close()
    if keys != ["new0"]:
        raise RuntimeError(f"saw {keys}, want ['new0'] (old records replayed)")


@check("watermarks")
def _():
    c = Consumer({"bootstrap.servers": BOOT, "group.id": G + "w"})
    w = [c.get_watermark_offsets(TopicPartition(T, p), timeout=10) for p in range(3)]
    c.close()
    return str(w)


@check("offsets_for_times")
def _():
    c = Consumer({"bootstrap.servers": BOOT, "group.id": G + "t"})
    r = c.offsets_for_times([TopicPartition(T, p, 0) for p in range(3)], timeout=10)
    c.close()
    return str([(tp.partition, tp.offset) for tp in r])


@check("idempotent_produce")
def _():
    produce({"enable.idempotence": True}, T, 5, "i")
    return "5 msgs with enable.idempotence=true"


@check("txn_commit")
def _():
    produce({"transactional.id": f"tx-{RUN}"}, TX, 3, "c", txn="commit")


@check("txn_abort")
def _():
    produce({"transactional.id": f"tx-{RUN}"}, TX, 3, "a", txn="abort")


@check("read_committed")
def _():
    c, got = consume(f"gtx-{RUN}", [TX], 6, {"isolation.level": "read_committed"},
                     timeout=8)
    c.close()
    keys = sorted(m.key().decode() for m in got)
    if keys != ["c0", "c1", "c2"]:
        raise RuntimeError(f"read_committed saw {keys}, want c0..c2 only")
    return "aborted records hidden"


@check("txn_send_offsets")
def _():
    # consume-transform-produce: offsets committed inside the transaction.
    g = f"eos-{RUN}"
    c, got = consume(g, [T], 12)
    got += consume_more(c)  # everything in T, whatever earlier checks added
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": f"eos-{RUN}"})
    p.init_transactions(10)
    p.begin_transaction()
    for m in got:
        p.produce(TX, key=m.key(), value=m.value())
    p.send_offsets_to_transaction(c.position(c.assignment()),
                                  c.consumer_group_metadata(), 10)
    p.commit_transaction(10)
    offs = c.committed([TopicPartition(T, i) for i in range(3)], timeout=10)
    c.close()
    total = sum(tp.offset for tp in offs if tp.offset >= 0)
    if total != len(got):
        raise RuntimeError(f"group offsets after txn commit sum {total}, want {len(got)}")
    return f"{len(got)} msgs, group offsets {[tp.offset for tp in offs]}"


@check("compression")
def _():
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        produce({"compression.type": codec}, TX, 2, codec)
    return "gzip snappy lz4 zstd produced"


@check("list_groups")
def _():
    r = admin().list_consumer_groups().result(10)
    ids = sorted(g.group_id for g in r.valid)
    if G not in ids:
        raise RuntimeError(f"{G} not in {ids}")
    return f"{len(ids)} groups"


@check("describe_group")
def _():
    d = admin().describe_consumer_groups([G])[G].result(10)
    return f"state={d.state} members={len(d.members)}"


@check("group_offsets_admin")
def _():
    from confluent_kafka import ConsumerGroupTopicPartitions
    r = admin().list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(G)])[G].result(10)
    return str([(tp.partition, tp.offset) for tp in r.topic_partitions])


@check("create_partitions")
def _():
    admin().create_partitions([NewPartitions(T, 4)])[T].result(10)
    n = len(admin().list_topics(T, timeout=10).topics[T].partitions)
    if n != 4:
        raise RuntimeError(f"{n} partitions after grow to 4")


@check("describe_configs")
def _():
    from confluent_kafka.admin import ConfigResource, ResourceType
    r = admin().describe_configs([ConfigResource(ResourceType.TOPIC, T)])
    cfg = list(r.values())[0].result(10)
    return f"{len(cfg)} entries"


@check("delete_topics")
def _():
    admin().delete_topics([T, TX, f"{T}-b"])[T].result(10)
    time.sleep(0.5)
    if T in admin().list_topics(timeout=10).topics:
        raise RuntimeError("topic still listed after delete")


failed = [n for n, ok in results if not ok and n in CORE]
print(f"core failures: {failed or 'none'}")
print(f"{sum(ok for _, ok in results)} passed, {sum(not ok for _, ok in results)} failed")
sys.exit(1 if failed else 0)
