"""Incident-quality metrics against a scenario's ground truth.

Owns the scoring used by `make eval` (scripts/eval.py, the correlator via
`outagectl replay`) and by the DBSCAN baseline in `make bench`
(scripts/bench_dbscan.py), so both are judged by the same rules:

- matching: predicted and true incidents are paired one-to-one, best site
  overlap (Jaccard) first; a pair counts when the Jaccard index is >= 0.5;
- precision = matched predicted / predicted; recall = matched true / true
  (both 1.0 when there is nothing to find and nothing was found);
- ARI: adjusted Rand index of the site -> incident assignment, over every
  site that is in a true incident, is a noise site, or is predicted; a site
  in no incident is its own singleton on either side;
- detection latency: for each matched pair, predicted declaration time -
  true start, in seconds;
- noise incidents: predicted incidents with no site in any true incident;
- purity: a predicted incident is pure when all its sites belong to one
  true incident (no noise site, nothing of another outage);
- audience (with `Coverage`): customers told — billed in the postcodes the
  predicted incidents' sites cover — against the true audience, customers
  billed in the postcodes the true incidents' sites cover (a postcode is
  covered by a site when its centroid lies within the site's radius, the
  reference data's rule); precision and recall by customers, and the ratio
  told / true.

Standard library only (no numpy), so `make eval` needs nothing installed.
"""

from __future__ import annotations

import csv
import datetime as dt
import statistics
from math import asin, comb, cos, radians, sin, sqrt
from pathlib import Path

MATCH_JACCARD = 0.5
EARTH_KM = 6371.0088


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    (la1, lo1), (la2, lo2) = (tuple(map(radians, a)), tuple(map(radians, b)))
    h = sin((la2 - la1) / 2) ** 2 + cos(la1) * cos(la2) * sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_KM * asin(min(1.0, sqrt(h)))


class Coverage:
    """Which postcodes each site covers and how many customers each
    postcode bills, from the reference data files."""

    def __init__(self, sites_csv: Path, postcodes_csv: Path, customers_csv: Path):
        with open(postcodes_csv, newline="") as f:
            postcodes = [(r["postcode"], (float(r["lat"]), float(r["lon"]))) for r in csv.DictReader(f)]
        self.customers: dict[str, int] = {}
        with open(customers_csv, newline="") as f:
            for r in csv.DictReader(f):
                self.customers[r["postcode"]] = self.customers.get(r["postcode"], 0) + 1
        self.site_postcodes: dict[str, set[str]] = {}
        with open(sites_csv, newline="") as f:
            for r in csv.DictReader(f):
                at, radius = (float(r["lat"]), float(r["lon"])), float(r["radius_km"])
                self.site_postcodes[r["site_id"]] = {p for p, c in postcodes if haversine_km(at, c) <= radius}

    def postcodes(self, sites) -> set[str]:
        out: set[str] = set()
        for s in sites:
            out |= self.site_postcodes.get(s, set())
        return out

    def count(self, postcodes: set[str]) -> int:
        return sum(self.customers.get(p, 0) for p in postcodes)


def audience(truth: dict, told_postcodes: set[str], cov: Coverage) -> dict:
    """Customers told vs customers whose own site was down in the truth."""
    true_pc = cov.postcodes(s for t in truth["incidents"] for s in t["sites"])
    told, real, both = cov.count(told_postcodes), cov.count(true_pc), cov.count(told_postcodes & true_pc)
    return {
        "audience_told": told,
        "audience_true": real,
        "audience_precision": round(both / told, 4) if told else 1.0,
        "audience_recall": round(both / real, 4) if real else 1.0,
        "audience_ratio": round(told / real, 4) if real else (1.0 if not told else None),
    }


def parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def match(truth_sets: list[set], pred_sets: list[set]) -> list[tuple[int, int, float]]:
    """One-to-one pairs (truth index, predicted index, jaccard), best first."""
    pairs = sorted(
        ((jaccard(t, p), ti, pi) for ti, t in enumerate(truth_sets) for pi, p in enumerate(pred_sets) if t & p),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    used_t, used_p, out = set(), set(), []
    for j, ti, pi in pairs:
        if j < MATCH_JACCARD or ti in used_t or pi in used_p:
            continue
        used_t.add(ti)
        used_p.add(pi)
        out.append((ti, pi, j))
    return out


def adjusted_rand_index(labels_a: list, labels_b: list) -> float:
    """ARI (Hubert & Arabie) of two labelings of the same items."""
    n = len(labels_a)
    if n < 2:
        return 1.0
    cont: dict[tuple, int] = {}
    rows: dict = {}
    cols: dict = {}
    for a, b in zip(labels_a, labels_b):
        cont[(a, b)] = cont.get((a, b), 0) + 1
        rows[a] = rows.get(a, 0) + 1
        cols[b] = cols.get(b, 0) + 1
    index = sum(comb(v, 2) for v in cont.values())
    sum_rows = sum(comb(v, 2) for v in rows.values())
    sum_cols = sum(comb(v, 2) for v in cols.values())
    expected = sum_rows * sum_cols / comb(n, 2)
    maximum = (sum_rows + sum_cols) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def score(truth: dict, predicted: list[list[str]], declared_at: list[str | None] | None = None) -> dict:
    """Score predicted incidents (lists of site ids; optional declaration
    times, RFC 3339) against a ground truth as `outagectl simulate --truth`
    writes it."""
    truth_sets = [set(t["sites"]) for t in truth["incidents"]]
    pred_sets = [set(p) for p in predicted]
    pairs = match(truth_sets, pred_sets)
    n_t, n_p = len(truth_sets), len(pred_sets)
    precision = len(pairs) / n_p if n_p else 1.0
    recall = len(pairs) / n_t if n_t else 1.0

    true_sites = set().union(*truth_sets) if truth_sets else set()
    universe_set = true_sites | set(truth.get("noise_sites", []))
    for p in pred_sets:
        universe_set |= p
    universe = sorted(universe_set)
    true_label = {s: f"T{i}" for i, ts in enumerate(truth_sets) for s in ts}
    pred_label: dict[str, str] = {}
    for i, ps in enumerate(pred_sets):
        for s in ps:
            pred_label.setdefault(s, f"P{i}")
    ari = adjusted_rand_index(
        [true_label.get(s, "t:" + s) for s in universe],
        [pred_label.get(s, "p:" + s) for s in universe],
    )

    latencies = []
    if declared_at is not None:
        for ti, pi, _ in pairs:
            if declared_at[pi] is not None:
                start = parse_time(truth["incidents"][ti]["start"])
                latencies.append((parse_time(declared_at[pi]) - start).total_seconds())
    noise = sum(1 for p in pred_sets if not p & true_sites)
    pure = sum(1 for p in pred_sets if any(p <= t for t in truth_sets))
    return {
        "pure": pure,
        "purity": round(pure / n_p, 4) if n_p else 1.0,
        "truth": n_t,
        "predicted": n_p,
        "matched": len(pairs),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "ari": round(ari, 4),
        "latency_s_median": statistics.median(latencies) if latencies else None,
        "latency_s_max": max(latencies) if latencies else None,
        "noise_incidents": noise,
    }
