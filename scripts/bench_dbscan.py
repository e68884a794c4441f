#!/usr/bin/env python3
"""Batch DBSCAN baseline next to the streaming correlator (part of `make bench`).

Owns the DBSCAN comparison in BENCHMARKS.md. For every shipped scenario case
(the list in scripts/eval.py) and seed it runs `outagectl simulate`, then
scores two answers over the same alarms with the same rules
(scripts/quality.py):

- the correlator: `outagectl replay --json`, its declared incidents; its time
  is the wall clock of the whole replay process (start, parsing, report);
- scikit-learn's DBSCAN (haversine metric, ball tree, min_samples 3,
  eps EPS_KM) over the distinct sites that had a service-affecting raise
  (one of the simulator's four service-affecting causes, severity major or
  critical), at
  their coordinates in the same sites file. Each cluster is a predicted
  incident; label -1 is noise. Its time is the fit only.

DBSCAN is batch: it sees every down site of the whole scenario after the
fact, has no time axis and no declaration moment, so its detection latency
is null. An eps sweep (5, 10, 15, 20 km) on the demo case shows the default
is not a strawman. With --scale-alarms N it also times a DBSCAN fit on N
uniform points in the box the Rust correlator bench uses (35-45 N,
90-100 W), with the process's peak RSS.

Prints a table to stderr and the figures as JSON to stdout.

Usage (`make bench` sets up .venv-bench from scripts/requirements-bench.txt;
build outagectl first: cargo build --release --bin outagectl):
  .venv-bench/bin/python scripts/bench_dbscan.py [--outagectl PATH]
      [--seeds 1,2,3] [--json OUT] [--scale-alarms 200000]
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
SITES_CSV = REPO / "data/demo/sites.csv"
POSTCODES_CSV = REPO / "data/demo/postcodes.csv"
EARTH_KM = 6371.0088
# Comparable to the correlator's joining distance: two 2-4 km coverage radii
# plus its 10 km neighbour gap.
EPS_KM = 15.0
MIN_SAMPLES = 3  # the correlator's min_sites
SWEEP_KM = (5.0, 10.0, 15.0, 20.0)
SWEEP_CASE = "demo"
# The simulator's service-affecting causes (src/simulate.rs), normalized as
# the classifier does (letters and digits, lower case); its environmental
# noise is left out by class in the correlator and by name here.
SERVICE_AFFECTING = {"powerproblem", "communicationssubsystemfailure", "equipmentmalfunction", "lossofsignal"}
DOWN_SEVERITIES = {"major", "critical"}
SCALE_LAT, SCALE_LON = (35.0, 45.0), (-100.0, -90.0)
AVERAGED = ("precision", "recall", "ari", "noise_incidents", "seconds")
NOTES = {
    "correlator_seconds": "wall clock of the whole `outagectl replay --json` process",
    "dbscan_seconds": "DBSCAN fit only",
    "dbscan_latency": "null: DBSCAN is batch, it sees the whole storm after the fact "
                      "(no time axis, no declaration time)",
}


def load_sites() -> dict[str, tuple[float, float]]:
    with open(SITES_CSV, newline="") as f:
        return {r["site_id"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)}


def normalize(cause: str) -> str:
    """The classifier's matching key: letters and digits, lower case."""
    return "".join(c for c in cause if c.isalnum()).lower()


def down_sites(alarms: Path) -> list[str]:
    """Distinct sites with a service-affecting raise, in first-seen order
    (the correlator's test for the simulator's causes: severity major or
    critical, cause in a class that counts)."""
    seen: dict[str, None] = {}
    for line in alarms.read_text().splitlines():
        a = json.loads(line)
        if a["state"] == "raised" and a["severity"] in DOWN_SEVERITIES \
                and normalize(a["probable_cause"]) in SERVICE_AFFECTING:
            seen.setdefault(a["site_id"], None)
    return list(seen)


def fit(coords_deg: np.ndarray, eps_km: float) -> tuple[np.ndarray, float]:
    """DBSCAN labels of (lat, lon) points in degrees, and the fit's seconds."""
    if not len(coords_deg):
        return np.array([], dtype=int), 0.0
    model = DBSCAN(eps=eps_km / EARTH_KM, min_samples=MIN_SAMPLES, metric="haversine", algorithm="ball_tree")
    points = np.radians(coords_deg)
    t = time.perf_counter()
    labels = model.fit_predict(points)
    return labels, time.perf_counter() - t


def clusters(ids: list[str], labels: np.ndarray) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for site, label in zip(ids, labels):
        if label >= 0:
            out.setdefault(int(label), []).append(site)
    return list(out.values())


def simulate(outagectl: str, case: str, seed: int, tmp: Path) -> tuple[Path, dict]:
    power, storms, flaps = CASES[case]
    alarms, truth = tmp / f"{case}-{seed}.jsonl", tmp / f"{case}-{seed}.truth.json"
    run([outagectl, "simulate", "--sites", str(SITES_CSV), "--seed", str(seed), "--start", START,
         "--power-failures", str(power), "--storms", str(storms), "--flaps", str(flaps),
         "--format", "native", "--out", str(alarms), "--truth", str(truth)])
    return alarms, json.loads(truth.read_text())


def correlator(outagectl: str, alarms: Path, truth: dict) -> tuple[dict, int]:
    """Score of the correlator's declared incidents, and the alarm count."""
    t = time.perf_counter()
    out = run([outagectl, "replay", "--alarms", str(alarms), "--sites", str(SITES_CSV),
               "--postcodes", str(POSTCODES_CSV), "--json"])
    seconds = time.perf_counter() - t
    report = json.loads(out)
    declared = [i for i in report["incidents"] if i["declared_at"]]
    score = quality.score(truth, [i["sites"] for i in declared], [i["declared_at"] for i in declared])
    return {**score, "seconds": round(seconds, 4)}, report["alarms"]


def baseline(ids: list[str], coords: np.ndarray, truth: dict, eps_km: float) -> dict:
    labels, seconds = fit(coords, eps_km)
    return {**quality.score(truth, clusters(ids, labels)), "seconds": round(seconds, 4), "eps_km": eps_km}


def one_case(outagectl: str, case: str, seed: int, tmp: Path, sites: dict) -> tuple[dict, list[dict]]:
    """The case's row, and its eps sweep (empty but for SWEEP_CASE)."""
    alarms, truth = simulate(outagectl, case, seed, tmp)
    corr, n_alarms = correlator(outagectl, alarms, truth)
    ids = down_sites(alarms)
    coords = np.array([sites[s] for s in ids], dtype=float).reshape(-1, 2)
    row = {"case": case, "seed": seed, "alarms": n_alarms, "down_sites": len(ids),
           "correlator": corr, "dbscan": baseline(ids, coords, truth, EPS_KM)}
    sweep = [{"case": case, "seed": seed, **baseline(ids, coords, truth, eps)}
             for eps in (SWEEP_KM if case == SWEEP_CASE else ())]
    return row, sweep


def mean_or_none(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.mean(present), 4) if present else None


def averages(rows: list[dict]) -> dict:
    """Per case and side: means over seeds (latency: mean of the medians)."""
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = [r for r in rows if r["case"] == case]
        out[case] = {side: {k: mean_or_none([r[side][k] for r in rs]) for k in AVERAGED + ("latency_s_median",)}
                     for side in ("correlator", "dbscan")}
    return out


def scale(points: int) -> dict:
    """DBSCAN fit on `points` uniform points in the Rust correlator bench's box."""
    rng = np.random.default_rng(0)
    coords = np.column_stack([rng.uniform(*SCALE_LAT, points), rng.uniform(*SCALE_LON, points)])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    labels, seconds = fit(coords, EPS_KM)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"points": points, "eps_km": EPS_KM, "seconds": round(seconds, 3),
            "points_per_s": round(points / seconds) if seconds else None,
            "clusters": int(labels.max()) + 1, "noise_points": int((labels < 0).sum()),
            "peak_rss_mib": round(rss_after, 1), "peak_rss_mib_before_fit": round(rss_before, 1)}


def fmt_score(s: dict) -> str:
    return f"{s['precision']:.2f}/{s['recall']:.2f}/{s['ari']:.3f}"


def fmt_latency(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}s"


def print_table(doc: dict) -> None:
    def err(line: str = "") -> None:
        print(line, file=sys.stderr)

    head = (f"{'case':<11} {'seed':>4} {'alarms':>6} {'down':>4} {'truth':>5} | {'corr P/R/ARI':<16} {'decl':>4} "
            f"{'lat med':>7} {'replay s':>8} | {'DBSCAN P/R/ARI':<16} {'clus':>4} {'noise':>5} {'fit s':>7}")
    err(head)
    err("-" * len(head))
    for r in doc["cases"]:
        c, d = r["correlator"], r["dbscan"]
        err(f"{r['case']:<11} {r['seed']:>4} {r['alarms']:>6} {r['down_sites']:>4} {c['truth']:>5} | "
            f"{fmt_score(c):<16} {c['predicted']:>4} {fmt_latency(c['latency_s_median']):>7} {c['seconds']:>8.3f} | "
            f"{fmt_score(d):<16} {d['predicted']:>4} {d['noise_incidents']:>5} {d['seconds']:>7.4f}")
    err(f"\nmeans over seeds (DBSCAN eps {EPS_KM:g} km; noise = incidents from noise alone):")
    for case, a in doc["averages"].items():
        c, d = a["correlator"], a["dbscan"]
        err(f"  {case:<11} correlator {fmt_score(c)} noise {c['noise_incidents']:.1f} "
            f"lat {fmt_latency(c['latency_s_median'])} {c['seconds']:.3f}s | "
            f"DBSCAN {fmt_score(d)} noise {d['noise_incidents']:.1f} fit {d['seconds']:.4f}s")
    err(f"\neps sweep on {SWEEP_CASE} (P/R/ARI per seed):")
    for eps in SWEEP_KM:
        es = [e for e in doc["eps_sweep"] if e["eps_km"] == eps]
        err(f"  eps {eps:>4g} km: " + "  ".join(f"seed {e['seed']} {fmt_score(e)} noise {e['noise_incidents']}"
                                                for e in es))
    if doc["scale"]:
        s = doc["scale"]
        err(f"\nscale: DBSCAN fit on {s['points']} uniform points (eps {s['eps_km']:g} km) in {s['seconds']} s "
            f"({s['points_per_s']} points/s), {s['clusters']} cluster(s), peak RSS {s['peak_rss_mib']} MiB "
            f"({s['peak_rss_mib_before_fit']} MiB before the fit)")
    err("\n" + "; ".join(f"{k}: {v}" for k, v in doc["notes"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outagectl", default=str(REPO / "target/release/outagectl"))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--scale-alarms", type=int, default=0,
                    help="also time a DBSCAN fit on this many uniform points (0: skip; documented up to 200000)")
    args = ap.parse_args()
    if not Path(args.outagectl).is_file():
        sys.exit(f"{args.outagectl} not found: cargo build --release --bin outagectl")
    seeds = [int(s) for s in args.seeds.split(",")]
    sites = load_sites()

    rows, sweep = [], []
    with tempfile.TemporaryDirectory(prefix="outage-dbscan-") as tmp:
        for case in CASES:
            for seed in seeds:
                row, case_sweep = one_case(args.outagectl, case, seed, Path(tmp), sites)
                rows.append(row)
                sweep += case_sweep
    doc = {"cases": rows, "averages": averages(rows), "eps_sweep": sweep,
           "scale": scale(args.scale_alarms) if args.scale_alarms > 0 else None,
           "notes": NOTES, "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__}}

    print_table(doc)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
