#!/usr/bin/env python3
"""Batch DBSCAN baseline next to the streaming correlator (part of `make bench`).

Owns the comparison in BENCHMARKS.md: on the shipped scenarios (the same
cases as scripts/eval.py), the correlator (`outagectl replay`, its declared
incidents) and scikit-learn's DBSCAN (haversine metric, ball tree) over the
same alarms are scored with the same rules (scripts/quality.py), and timed.

DBSCAN's input: the distinct sites that had a service-affecting raise
(severity major/critical, one of the simulator's service-affecting causes),
at their coordinates. Each cluster is a predicted incident; label -1 is
noise. DBSCAN has no time axis and no declaration: it sees the whole storm
after the fact, so it has no detection latency, and its time is the fit
only. An eps sweep on the demo case keeps the comparison fair.

Usage (make bench sets up .venv-bench with scripts/requirements-bench.txt):
  .venv-bench/bin/python scripts/bench_dbscan.py [--seeds 1,2,3] [--json OUT]
      [--scale-points 200000]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.cluster import DBSCAN

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from eval import CASES, START, run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EARTH_KM = 6371.0088
# Comparable to the correlator's joining distance: two 2–4 km coverage radii
# plus the 10 km neighbour gap.
EPS_KM = 15.0
MIN_SAMPLES = 3  # the correlator's min_sites
SWEEP_KM = (5.0, 10.0, 15.0, 20.0)
SERVICE_AFFECTING = {"mains power failure", "backhaul link down", "equipment failure", "loss of signal"}


def load_sites() -> dict[str, tuple[float, float]]:
    with open(REPO / "data/demo/sites.csv", newline="") as f:
        return {r["site_id"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)}


def down_sites(alarms: Path) -> list[str]:
    seen: dict[str, None] = {}
    for line in alarms.read_text().splitlines():
        a = json.loads(line)
        if a["state"] == "raised" and a["severity"] in ("major", "critical") \
                and a["probable_cause"] in SERVICE_AFFECTING:
            seen.setdefault(a["site_id"], None)
    return list(seen)


def dbscan(coords: np.ndarray, eps_km: float) -> tuple[np.ndarray, float]:
    model = DBSCAN(eps=eps_km / EARTH_KM, min_samples=MIN_SAMPLES, metric="haversine", algorithm="ball_tree")
    t = time.perf_counter()
    labels = model.fit_predict(np.radians(coords)) if len(coords) else np.array([], dtype=int)
    return labels, time.perf_counter() - t


def clusters(ids: list[str], labels: np.ndarray) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for site, label in zip(ids, labels):
        if label >= 0:
            out.setdefault(int(label), []).append(site)
    return list(out.values())


def one_case(outagectl: str, case: str, seed: int, tmp: Path, sites: dict) -> dict:
    power, storms, flaps = CASES[case]
    alarms, truth_path = tmp / f"{case}-{seed}.jsonl", tmp / f"{case}-{seed}.truth.json"
    run([outagectl, "simulate", "--seed", str(seed), "--start", START, "--power-failures", str(power),
         "--storms", str(storms), "--flaps", str(flaps), "--out", str(alarms), "--truth", str(truth_path)])
    truth = json.loads(truth_path.read_text())
    t = time.perf_counter()
    report = json.loads(run([outagectl, "replay", "--alarms", str(alarms), "--json"]))
    replay_s = time.perf_counter() - t
    declared = [i for i in report["incidents"] if i["declared_at"]]
    corr = quality.score(truth, [i["sites"] for i in declared], [i["declared_at"] for i in declared])
    corr["seconds"] = round(replay_s, 4)  # the whole replay process, file reading included
    ids = down_sites(alarms)
    coords = np.array([sites[s] for s in ids]).reshape(-1, 2)
    row = {"case": case, "seed": seed, "alarms": report["alarms"], "down_sites": len(ids), "correlator": corr}
    labels, fit_s = dbscan(coords, EPS_KM)
    row["dbscan"] = {**quality.score(truth, clusters(ids, labels)), "seconds": round(fit_s, 4), "eps_km": EPS_KM}
    row["sweep"] = []
    if case == "demo":
        for eps in SWEEP_KM:
            labels, fit_s = dbscan(coords, eps)
            row["sweep"].append({**quality.score(truth, clusters(ids, labels)), "eps_km": eps,
                                 "seconds": round(fit_s, 4)})
    return row


def scale(points: int) -> dict:
    """DBSCAN fit on `points` uniform points in the correlator bench's box."""
    rng = np.random.default_rng(0)
    coords = np.column_stack([rng.uniform(35, 45, points), rng.uniform(-100, -90, points)])
    labels, fit_s = dbscan(coords, EPS_KM)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"points": points, "eps_km": EPS_KM, "seconds": round(fit_s, 3),
            "points_per_s": round(points / fit_s), "clusters": int(labels.max() + 1) if len(labels) else 0,
            "peak_rss_mib": round(rss_mib, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outagectl", default=str(REPO / "target/release/outagectl"))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--json", help="write the figures to this file too")
    ap.add_argument("--scale-points", type=int, default=100_000,
                    help="also time DBSCAN on this many synthetic points (0: skip)")
    args = ap.parse_args()
    sites = load_sites()
    rows = []
    with tempfile.TemporaryDirectory(prefix="outage-dbscan-") as tmp:
        for case in CASES:
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(one_case(args.outagectl, case, seed, Path(tmp), sites))

    head = f"{'case':<11} {'seed':>4} | {'correlator P/R/ARI':<20} {'s':>6} | {'DBSCAN P/R/ARI':<20} {'fit s':>7} {'noise':>5}"
    print(head, file=sys.stderr)
    for r in rows:
        c, d = r["correlator"], r["dbscan"]
        print(f"{r['case']:<11} {r['seed']:>4} | {c['precision']:.2f}/{c['recall']:.2f}/{c['ari']:.3f}{'':<6} "
              f"{c['seconds']:>6.2f} | {d['precision']:.2f}/{d['recall']:.2f}/{d['ari']:.3f}{'':<6} "
              f"{d['seconds']:>7.4f} {d['noise_incidents']:>5}", file=sys.stderr)
    summary = {}
    for case in CASES:
        rs = [r for r in rows if r["case"] == case]
        summary[case] = {who: {k: round(statistics.mean(r[who][k] for r in rs), 4)
                               for k in ("precision", "recall", "ari", "noise_incidents", "seconds")}
                         for who in ("correlator", "dbscan")}
    doc = {"cases": rows, "summary": summary,
           "scale": scale(args.scale_points) if args.scale_points else None,
           "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__}}
    for s in (r["sweep"] for r in rows if r["sweep"]):
        for e in s:
            print(f"  demo sweep eps {e['eps_km']:>4} km: P {e['precision']:.2f} R {e['recall']:.2f} "
                  f"ARI {e['ari']:.3f} noise {e['noise_incidents']}", file=sys.stderr)
    if doc["scale"]:
        print(f"  scale: {doc['scale']}", file=sys.stderr)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
