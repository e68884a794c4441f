#!/usr/bin/env python3
"""Batch DBSCAN baseline next to the streaming correlator (part of `make bench`).

Owns the DBSCAN comparison in BENCHMARKS.md. For every shipped scenario case
(the list in scripts/eval.py) and seed it runs `outagectl simulate`, then
scores two answers over the same alarms with the same rules
(scripts/quality.py):

- the correlator: `outagectl replay --json`, its declared incidents; its time
  is the wall clock of the whole replay process (start, parsing, report);
- scikit-learn's DBSCAN in space and time (euclidean, min_samples 3, eps
  EPS_KM) over every service-affecting failure (the first raise of each
  alarm of one of the simulator's service-affecting causes, severity major
  or critical): its site's position in km (a local equirectangular
  projection) and its start, TIME_KM km per minute (so eps 12 km is also
  30 minutes, the correlator's join window). Each cluster is a predicted
  incident (its sites); label -1 is noise. Its time is the fit only.

Both are scored by quality.py: precision, recall, purity, ARI, and the
audience (customers in the postcodes the predicted incidents' sites cover
against those the truly-down sites cover; the correlator's own footprint
from the replay report).

DBSCAN is batch: it sees every failure of the whole scenario after the
fact, with hindsight, and has no declaration moment, so its detection
latency is null. An eps sweep (5, 10, 15, 20 km) on the city-day case shows
the default is not a strawman. With --scale-alarms N it also times a DBSCAN fit on N
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
from eval import CASES, CUSTOMERS_CSV, START, run, simulate_flags  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SITES_CSV = REPO / "data/demo/sites.csv"
POSTCODES_CSV = REPO / "data/demo/postcodes.csv"
EARTH_KM = 6371.0088
# The space-time baseline: 12 km, and 30 minutes as 12 km.
EPS_KM = 12.0
TIME_KM = 12.0 / 30.0
MIN_SAMPLES = 3  # the correlator's min_sites
SWEEP_KM = (5.0, 10.0, 15.0, 20.0)
SWEEP_CASE = "city-day"
# The simulator's service-affecting causes (src/simulate.rs), normalized as
# the classifier does (letters and digits, lower case); its environmental
# noise is left out by class in the correlator and by name here.
SERVICE_AFFECTING = {"powerproblem", "communicationssubsystemfailure", "equipmentmalfunction", "lossofsignal",
                     "outofservice"}
DOWN_SEVERITIES = {"major", "critical"}
SCALE_LAT, SCALE_LON = (35.0, 45.0), (-100.0, -90.0)
AVERAGED = ("precision", "recall", "purity", "ari", "noise_incidents", "audience_ratio", "audience_precision",
            "audience_recall", "seconds")
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


def failures(alarms: Path) -> list[tuple[str, float]]:
    """Every service-affecting failure as (site, start in minutes), by the
    first raise of each alarm id (the correlator's test for the simulator's
    causes: severity major or critical, cause in a class that counts)."""
    seen: dict[str, tuple[str, float]] = {}
    for line in alarms.read_text().splitlines():
        a = json.loads(line)
        if a["state"] == "raised" and a["severity"] in DOWN_SEVERITIES \
                and normalize(a["probable_cause"]) in SERVICE_AFFECTING:
            t = quality.parse_time(a["event_time"]).timestamp() / 60.0
            if a["alarm_id"] not in seen or t < seen[a["alarm_id"]][1]:
                seen[a["alarm_id"]] = (a["site_id"], t)
    return list(seen.values())


def space_time(points: list[tuple[str, float]], sites: dict) -> np.ndarray:
    """(x km, y km, TIME_KM * minutes) per failure."""
    if not points:
        return np.zeros((0, 3))
    lat0 = np.radians(statistics.mean(sites[s][0] for s, _ in points))
    t0 = min(t for _, t in points)
    return np.array([[EARTH_KM * np.radians(sites[s][1]) * np.cos(lat0), EARTH_KM * np.radians(sites[s][0]),
                      TIME_KM * (t - t0)] for s, t in points])


def fit(coords: np.ndarray, eps_km: float, metric: str = "euclidean") -> tuple[np.ndarray, float]:
    """DBSCAN labels of the points, and the fit's seconds."""
    if not len(coords):
        return np.array([], dtype=int), 0.0
    if metric == "haversine":
        model = DBSCAN(eps=eps_km / EARTH_KM, min_samples=MIN_SAMPLES, metric="haversine", algorithm="ball_tree")
        coords = np.radians(coords)
    else:
        model = DBSCAN(eps=eps_km, min_samples=MIN_SAMPLES)
    t = time.perf_counter()
    labels = model.fit_predict(coords)
    return labels, time.perf_counter() - t


def clusters(ids: list[str], labels: np.ndarray) -> list[list[str]]:
    out: dict[int, set[str]] = {}
    for site, label in zip(ids, labels):
        if label >= 0:
            out.setdefault(int(label), set()).add(site)
    return [sorted(c) for c in out.values()]


def simulate(outagectl: str, case: str, seed: int, tmp: Path) -> tuple[Path, dict]:
    alarms, truth = tmp / f"{case}-{seed}.jsonl", tmp / f"{case}-{seed}.truth.json"
    run([outagectl, "simulate", "--sites", str(SITES_CSV), "--seed", str(seed), "--start", START,
         *simulate_flags(case), "--format", "native", "--out", str(alarms), "--truth", str(truth)])
    return alarms, json.loads(truth.read_text())


def correlator(outagectl: str, alarms: Path, truth: dict, cov: quality.Coverage) -> tuple[dict, int]:
    """Score of the correlator's declared incidents, and the alarm count."""
    t = time.perf_counter()
    out = run([outagectl, "replay", "--alarms", str(alarms), "--sites", str(SITES_CSV),
               "--postcodes", str(POSTCODES_CSV), "--json"])
    seconds = time.perf_counter() - t
    report = json.loads(out)
    declared = [i for i in report["incidents"] if i["declared_at"]]
    score = quality.score(truth, [i["sites"] for i in declared], [i["declared_at"] for i in declared])
    score.update(quality.audience(truth, {p["postcode"] for i in declared for p in i["postcodes"]}, cov))
    return {**score, "seconds": round(seconds, 4)}, report["alarms"]


def baseline(ids: list[str], coords: np.ndarray, truth: dict, eps_km: float, cov: quality.Coverage,
             metric: str = "euclidean") -> dict:
    labels, seconds = fit(coords, eps_km, metric)
    found = clusters(ids, labels)
    return {**quality.score(truth, found), **quality.audience(truth, cov.postcodes(s for c in found for s in c), cov),
            "seconds": round(seconds, 4), "eps_km": eps_km}


def one_case(outagectl: str, case: str, seed: int, tmp: Path, sites: dict,
             cov: quality.Coverage) -> tuple[dict, list[dict]]:
    """The case's row, and its eps sweep (empty but for SWEEP_CASE)."""
    alarms, truth = simulate(outagectl, case, seed, tmp)
    corr, n_alarms = correlator(outagectl, alarms, truth, cov)
    points = failures(alarms)
    ids = [s for s, _ in points]
    coords = space_time(points, sites)
    down = sorted(set(ids))
    row = {"case": case, "seed": seed, "alarms": n_alarms, "down_sites": len(down), "failures": len(points),
           "correlator": corr, "dbscan": baseline(ids, coords, truth, EPS_KM, cov),
           # The space-only baseline of earlier sessions (eps 15 km over the down sites).
           "dbscan_space": baseline(down, np.array([sites[s] for s in down], dtype=float).reshape(-1, 2), truth,
                                    15.0, cov, "haversine")}
    sweep = [{"case": case, "seed": seed, **baseline(ids, coords, truth, eps, cov)}
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
        out[case] = {side: {k: mean_or_none([r[side].get(k) for r in rs]) for k in AVERAGED + ("latency_s_median",)}
                     for side in ("correlator", "dbscan", "dbscan_space")}
    return out


def scale(points: int) -> dict:
    """DBSCAN fit on `points` uniform points in the Rust correlator bench's box."""
    rng = np.random.default_rng(0)
    coords = np.column_stack([rng.uniform(*SCALE_LAT, points), rng.uniform(*SCALE_LON, points)])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    labels, seconds = fit(coords, 15.0, "haversine")
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"points": points, "eps_km": 15.0, "seconds": round(seconds, 3),
            "points_per_s": round(points / seconds) if seconds else None,
            "clusters": int(labels.max()) + 1, "noise_points": int((labels < 0).sum()),
            "peak_rss_mib": round(rss_after, 1), "peak_rss_mib_before_fit": round(rss_before, 1)}


def fmt_score(s: dict) -> str:
    aud = "-" if s.get("audience_ratio") is None else f"{(s['audience_ratio'] - 1) * 100:+.0f}%"
    return f"{s['precision']:.2f}/{s['recall']:.2f}/{s['purity']:.2f}/{aud}"


def fmt_latency(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}s"


def print_table(doc: dict) -> None:
    def err(line: str = "") -> None:
        print(line, file=sys.stderr)

    head = (f"{'case':<11} {'seed':>4} {'alarms':>6} {'down':>4} {'truth':>5} | {'corr P/R/pure/aud':<22} {'decl':>4} "
            f"{'lat med':>7} {'replay s':>8} | {'DBSCAN P/R/pure/aud':<22} {'clus':>4} {'noise':>5} {'fit s':>7}")
    err(head)
    err("-" * len(head))
    for r in doc["cases"]:
        c, d = r["correlator"], r["dbscan"]
        err(f"{r['case']:<11} {r['seed']:>4} {r['alarms']:>6} {r['down_sites']:>4} {c['truth']:>5} | "
            f"{fmt_score(c):<22} {c['predicted']:>4} {fmt_latency(c['latency_s_median']):>7} {c['seconds']:>8.3f} | "
            f"{fmt_score(d):<22} {d['predicted']:>4} {d['noise_incidents']:>5} {d['seconds']:>7.4f}")
    err(f"\nmeans over seeds (DBSCAN space-time eps {EPS_KM:g} km = {EPS_KM / TIME_KM:g} min; "
        "noise = incidents from noise alone):")
    for case, a in doc["averages"].items():
        c, d, sp = a["correlator"], a["dbscan"], a["dbscan_space"]
        aud = lambda v: "-" if v is None else f"{(v - 1) * 100:+.0f}%"  # noqa: E731
        err(f"  {case:<11} correlator P {c['precision']:.2f} R {c['recall']:.2f} pure {c['purity']:.2f} "
            f"aud {aud(c['audience_ratio'])} noise {c['noise_incidents']:.1f} | "
            f"DBSCAN P {d['precision']:.2f} R {d['recall']:.2f} pure {d['purity']:.2f} aud {aud(d['audience_ratio'])} "
            f"noise {d['noise_incidents']:.1f} | space-only P {sp['precision']:.2f} R {sp['recall']:.2f} "
            f"pure {sp['purity']:.2f} aud {aud(sp['audience_ratio'])}")
    err(f"\neps sweep on {SWEEP_CASE} (P/R/purity/audience per seed):")
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
    cov = quality.Coverage(SITES_CSV, POSTCODES_CSV, CUSTOMERS_CSV)

    rows, sweep = [], []
    with tempfile.TemporaryDirectory(prefix="outage-dbscan-") as tmp:
        for case in CASES:
            for seed in seeds:
                row, case_sweep = one_case(args.outagectl, case, seed, Path(tmp), sites, cov)
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
