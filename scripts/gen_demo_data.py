#!/usr/bin/env python3
"""Deterministic, seeded demo-data generator for the outage-communication pipeline.

Reads a US ZIP gazetteer (postcode,city,state,county,timezone,population,
land_sqmi,lat,lon) and writes, into --out:

  postcodes.csv  postcode,lat,lon,population,timezone,city,state   (real, from the gazetteer)
  sites.csv      site_id,lat,lon,radius_km,group_id                 (synthetic cell sites)
  customers.csv  customer_id,msisdn,email,postcode,language,services,
                 monthly_fee,avg_bill_3m,currency                   (synthetic customers)

Same arguments => byte-identical output. Only the Python 3.11 standard library
is used. All randomness comes from random.Random instances seeded with strings
derived from --seed and the state code (string seeds are hashed with SHA-512 by
the random module, so they do not depend on PYTHONHASHSEED); money is computed
in integer cents.

Regenerate the committed demo data (from the repo root):

  python3 scripts/gen_demo_data.py --states RI,CT --seed 42 \
      --out data/demo --write-slice data/demo/gazetteer_slice.csv
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GAZETTEER = REPO_ROOT.parent / "shared" / "data" / "us_zip_gazetteer.csv"
COMMITTED_SLICE = REPO_ROOT / "data" / "demo" / "gazetteer_slice.csv"

GAZETTEER_COLUMNS = ["postcode", "city", "state", "county", "timezone",
                     "population", "land_sqmi", "lat", "lon"]
SQMI_TO_KM2 = 2.58999
KM_PER_DEG_LAT = 111.32

# --------------------------------------------------------------------------
# Static tables
# --------------------------------------------------------------------------

# Plausible area codes per state (real NANP geographic codes). Numbers are
# random: they are NOT real subscribers' numbers by intent, but may collide
# with real ones -- never send real traffic to them. Codes are disjoint
# between states (checked below), which lets uniqueness tracking be per state.
AREA_CODES: dict[str, tuple[int, ...]] = {
    "AK": (907,), "AL": (205, 251, 256, 334), "AR": (479, 501, 870),
    "AZ": (480, 520, 602, 623, 928),
    "CA": (209, 213, 310, 323, 408, 415, 510, 530, 559, 562, 619, 626, 650,
           661, 707, 714, 760, 805, 818, 831, 858, 909, 916, 925, 949, 951),
    "CO": (303, 719, 720, 970), "CT": (203, 475, 860, 959), "DC": (202,),
    "DE": (302,),
    "FL": (305, 321, 352, 386, 407, 561, 727, 754, 772, 786, 813, 850, 863,
           904, 941, 954),
    "GA": (229, 404, 470, 478, 678, 706, 762, 770, 912), "HI": (808,),
    "IA": (319, 515, 563, 641, 712), "ID": (208, 986),
    "IL": (217, 224, 309, 312, 331, 618, 630, 708, 773, 779, 815, 847, 872),
    "IN": (219, 260, 317, 463, 574, 765, 812, 930),
    "KS": (316, 620, 785, 913), "KY": (270, 364, 502, 606, 859),
    "LA": (225, 318, 337, 504, 985),
    "MA": (339, 351, 413, 508, 617, 774, 781, 857, 978),
    "MD": (240, 301, 410, 443, 667), "ME": (207,),
    "MI": (231, 248, 269, 313, 517, 586, 616, 734, 810, 906, 947, 989),
    "MN": (218, 320, 507, 612, 651, 763, 952),
    "MO": (314, 417, 573, 636, 660, 816), "MS": (228, 601, 662, 769),
    "MT": (406,),
    "NC": (252, 336, 704, 743, 828, 910, 919, 980, 984), "ND": (701,),
    "NE": (308, 402, 531), "NH": (603,),
    "NJ": (201, 551, 609, 640, 732, 848, 856, 862, 908, 973),
    "NM": (505, 575), "NV": (702, 725, 775),
    "NY": (212, 315, 332, 347, 516, 518, 585, 607, 631, 646, 680, 716, 718,
           838, 845, 914, 917, 929, 934),
    "OH": (216, 220, 234, 330, 380, 419, 440, 513, 567, 614, 740, 937),
    "OK": (405, 539, 580, 918), "OR": (458, 503, 541, 971),
    "PA": (215, 223, 267, 272, 412, 445, 484, 570, 610, 717, 724, 814, 878),
    "PR": (787, 939), "RI": (401,), "SC": (803, 839, 843, 854, 864),
    "SD": (605,), "TN": (423, 615, 629, 731, 865, 901, 931),
    "TX": (210, 214, 254, 281, 325, 346, 361, 409, 430, 432, 469, 512, 682,
           713, 726, 737, 806, 817, 830, 832, 903, 915, 936, 940, 956, 972, 979),
    "UT": (385, 435, 801), "VA": (276, 434, 540, 571, 703, 757, 804),
    "VT": (802,), "WA": (206, 253, 360, 425, 509, 564),
    "WI": (262, 414, 534, 608, 715, 920), "WV": (304, 681), "WY": (307,),
}
FALLBACK_AREA_CODE = 555
_all_codes = [c for codes in AREA_CODES.values() for c in codes]
assert len(_all_codes) == len(set(_all_codes)), "area codes must be disjoint between states"
assert FALLBACK_AREA_CODE not in _all_codes

# Fallback IANA zones when the gazetteer's timezone is not a valid-looking zone
# name (the source has one such row: 99634 Napakiak, AK -> "Napakiak").
STATE_DEFAULT_TZ = {
    "AK": "America/Anchorage", "HI": "Pacific/Honolulu", "PR": "America/Puerto_Rico",
    "AZ": "America/Phoenix",
    **{s: "America/Los_Angeles" for s in ("CA", "NV", "OR", "WA")},
    **{s: "America/Denver" for s in ("CO", "ID", "MT", "NM", "UT", "WY")},
    **{s: "America/Chicago" for s in ("AL", "AR", "IA", "IL", "KS", "LA", "MN",
                                      "MO", "MS", "ND", "NE", "OK", "SD", "TN",
                                      "TX", "WI")},
}
DEFAULT_TZ = "America/New_York"
TZ_RE = re.compile(r"^[A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)+$")

LANGUAGES = [("en", 78.0), ("es", 14.0), ("es-MX", 3.0), ("ru", 2.0),
             ("nl", 1.5), ("fr", 1.5)]

# (services, weight %, fee range in cents (inclusive), fee step in cents)
SERVICE_PLANS = [
    ("mobile;voice", 55.0, 2500, 6500),
    ("mobile;voice;broadband", 20.0, 6000, 9500),
    ("broadband", 15.0, 3500, 7500),
    ("voice;broadband", 10.0, 4000, 8000),
]
FEE_STEP_CENTS = 500

EMAIL_DOMAINS = [("example.com", 70.0), ("example.org", 15.0), ("example.net", 15.0)]
P_NO_MSISDN = 0.02
P_NO_EMAIL = 0.05

_EN_FIRST = """james mary robert patricia john jennifer michael linda david elizabeth
william barbara richard susan joseph jessica thomas sarah charles karen
christopher lisa daniel nancy matthew betty anthony margaret mark sandra donald
ashley steven kimberly paul emily andrew donna joshua michelle kenneth carol
kevin amanda brian melissa george deborah timothy stephanie ronald rebecca
jason sharon edward laura jeffrey cynthia ryan kathleen jacob amy gary angela
nicholas shirley eric anna jonathan brenda stephen pamela larry emma justin
nicole scott helen brandon samantha benjamin katherine samuel christine""".split()
_EN_LAST = """smith johnson williams brown jones garcia miller davis rodriguez
martinez hernandez lopez gonzalez wilson anderson thomas taylor moore jackson
martin lee perez thompson white harris sanchez clark ramirez lewis robinson
walker young allen king wright scott torres nguyen hill flores green adams
nelson baker hall rivera campbell mitchell carter roberts gomez phillips evans
turner diaz parker cruz edwards collins reyes stewart morris morales murphy
cook rogers gutierrez ortiz morgan cooper peterson bailey reed kelly howard
ramos kim cox ward richardson watson brooks chavez wood james bennett gray
mendoza ruiz hughes price alvarez castillo sanders patel myers long ross
foster jimenez sullivan oconnor murray""".split()
_ES_FIRST = """jose maria juan ana luis carmen carlos rosa jorge guadalupe miguel
juana pedro laura francisco patricia antonio elena manuel sofia alejandro
isabel ricardo lucia fernando gabriela javier daniela diego valeria rafael
adriana""".split()
_ES_LAST = """garcia rodriguez martinez hernandez lopez gonzalez perez sanchez
ramirez torres flores rivera gomez diaz cruz morales reyes gutierrez ortiz
ramos chavez mendoza ruiz alvarez castillo jimenez vasquez romero herrera
medina aguilar vargas castro guzman""".split()
_RU_FIRST = """alexander dmitry sergei andrei ivan mikhail nikolai olga natalia
elena tatiana irina svetlana anna yulia ekaterina""".split()
_RU_LAST = """ivanov smirnov kuznetsov popov vasiliev petrov sokolov mikhailov
novikov fedorov morozov volkov alekseev lebedev semenov egorov""".split()
_NL_FIRST = """jan pieter kees willem hendrik dirk bram daan sanne femke anouk
lotte eva sophie maartje ingrid""".split()
_NL_LAST = """devries jansen debruijn vandenberg bakker visser smit meijer
deboer mulder degroot bos vos peters hendriks vanleeuwen""".split()
_FR_FIRST = """jean pierre michel philippe alain nicolas francois louis marie
nathalie isabelle sylvie catherine camille chloe juliette""".split()
_FR_LAST = """martin bernard dubois thomas robert richard petit durand leroy
moreau simon laurent lefebvre michel garnier rousseau""".split()
NAMES = {
    "en": (_EN_FIRST, _EN_LAST), "es": (_ES_FIRST, _ES_LAST),
    "es-MX": (_ES_FIRST, _ES_LAST), "ru": (_RU_FIRST, _RU_LAST),
    "nl": (_NL_FIRST, _NL_LAST), "fr": (_FR_FIRST, _FR_LAST),
}
for _f, _l in NAMES.values():
    assert all(re.fullmatch(r"[a-z]+", n) for n in _f + _l)


def _cumulative(weights: list[float]) -> list[float]:
    total = sum(weights)
    acc, out = 0.0, []
    for w in weights:
        acc += w
        out.append(acc / total)
    out[-1] = 1.0
    return out


# --------------------------------------------------------------------------
# Gazetteer
# --------------------------------------------------------------------------

def read_gazetteer(path: Path, states: set[str] | None) -> list[dict[str, str]]:
    """Rows of the requested states (all when None), sorted by postcode."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in GAZETTEER_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{path}: missing columns {missing}")
        rows = []
        for r in reader:
            st = r["state"].strip().upper()
            if states is not None and st not in states:
                continue
            pc = r["postcode"].strip()
            if pc.isdigit() and len(pc) < 5:  # leading zeros lost by a spreadsheet
                pc = pc.zfill(5)
            r = {c: r[c].strip() for c in GAZETTEER_COLUMNS}
            r["postcode"], r["state"] = pc, st
            rows.append(r)
    rows.sort(key=lambda r: r["postcode"])
    return rows


def clean_timezone(tz: str, state: str) -> str:
    if TZ_RE.match(tz):
        return tz
    return STATE_DEFAULT_TZ.get(state, DEFAULT_TZ)


def fmt_coord(x: float) -> str:
    s = f"{x:.5f}"
    return "0.00000" if s == "-0.00000" else s


def fmt_cents(c: int) -> str:
    assert c >= 0
    return f"{c // 100}.{c % 100:02d}"


# --------------------------------------------------------------------------
# Sites
# --------------------------------------------------------------------------

# (log10 people per km², radius km): piecewise-linear in log density.
RADIUS_ANCHORS = [(0.0, 15.0), (1.0, 10.0), (2.0, 5.0), (2.5, 3.5),
                  (3.0, 2.0), (3.7, 1.0)]
RADIUS_MIN_KM, RADIUS_MAX_KM = 0.8, 15.0
JITTER_FACTOR = 0.45  # max offset = 0.45 * sqrt(land km²) (equal-area circle radius ~0.56)


def radius_for_density(ppl_per_km2: float) -> float:
    x = math.log10(max(ppl_per_km2, 1e-3))
    if x <= RADIUS_ANCHORS[0][0]:
        return RADIUS_ANCHORS[0][1]
    for (x0, r0), (x1, r1) in zip(RADIUS_ANCHORS, RADIUS_ANCHORS[1:]):
        if x <= x1:
            return r0 + (r1 - r0) * (x - x0) / (x1 - x0)
    return RADIUS_ANCHORS[-1][1]


def hilbert_index(order: int, x: int, y: int) -> int:
    """Distance along a Hilbert curve of side 2**order for cell (x, y)."""
    d = 0
    s = 1 << (order - 1)
    while s > 0:
        rx = 1 if (x & s) else 0
        ry = 1 if (y & s) else 0
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x = s - 1 - x
                y = s - 1 - y
            x, y = y, x
        s >>= 1
    return d


def chunk_sizes(n: int, rng: random.Random, lo: int = 8, hi: int = 30) -> list[int]:
    """Split n into sizes drawn uniformly from lo..hi; a last chunk smaller than
    lo is merged into the previous one, and if that exceeds hi the merged chunk
    is split in two near-equal halves (each >= lo). n < lo gives one chunk."""
    sizes: list[int] = []
    left = n
    while left > 0:
        s = min(rng.randint(lo, hi), left)
        sizes.append(s)
        left -= s
    if len(sizes) >= 2 and sizes[-1] < lo:
        merged = sizes.pop() + sizes.pop()
        if merged > hi:
            sizes += [merged // 2, merged - merged // 2]
        else:
            sizes.append(merged)
    return sizes


def make_sites(rows: list[dict[str, str]], seed: str, people_per_site: int):
    """Return [(site_id, lat, lon, radius_km, group_id)] as formatted strings,
    sorted by site_id."""
    by_state: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_state.setdefault(r["state"], []).append(r)
    out = []
    for st in sorted(by_state):
        rng = random.Random(f"{seed}:sites:{st}")
        sites = []  # [site_id, lat, lon, radius_str]
        n_site = 0
        for r in by_state[st]:  # postcode order
            pop = int(r["population"] or 0)
            land_km2 = max(float(r["land_sqmi"] or 0.0), 0.0) * SQMI_TO_KM2
            lat0, lon0 = float(r["lat"]), float(r["lon"])
            n = max(1, (pop + people_per_site // 2) // people_per_site)
            density = pop / max(land_km2, 0.01)
            base_r = radius_for_density(density)
            max_off = JITTER_FACTOR * math.sqrt(land_km2)
            cos_lat = max(math.cos(math.radians(lat0)), 0.01)
            for _ in range(n):
                d = max_off * math.sqrt(rng.random())
                theta = 2.0 * math.pi * rng.random()
                lat = lat0 + d * math.cos(theta) / KM_PER_DEG_LAT
                lon = lon0 + d * math.sin(theta) / (KM_PER_DEG_LAT * cos_lat)
                lat = min(max(lat, -90.0), 90.0)
                lon = (lon + 180.0) % 360.0 - 180.0
                rad = base_r * (0.9 + 0.2 * rng.random())
                rad = min(max(rad, RADIUS_MIN_KM), RADIUS_MAX_KM)
                n_site += 1
                sites.append([f"S-{st}-{n_site:06d}", fmt_coord(lat), fmt_coord(lon),
                              f"{rad:.2f}"])
        # Group along a Hilbert curve over the (aspect-corrected) state bbox.
        lats = [float(s[1]) for s in sites]
        lons = [float(s[2]) for s in sites]
        min_lat, max_lat, min_lon, max_lon = min(lats), max(lats), min(lons), max(lons)
        kx = math.cos(math.radians((min_lat + max_lat) / 2.0))
        side = max((max_lon - min_lon) * kx, max_lat - min_lat, 1e-9)
        order = 16
        cells = (1 << order) - 1
        keyed = []
        for i, s in enumerate(sites):
            x = int((lons[i] - min_lon) * kx / side * cells)
            y = int((lats[i] - min_lat) / side * cells)
            keyed.append((hilbert_index(order, x, y), s[0], i))
        keyed.sort()
        grng = random.Random(f"{seed}:groups:{st}")
        pos = 0
        for g, size in enumerate(chunk_sizes(len(keyed), grng), start=1):
            gid = f"G-{st}-{g:04d}"
            for _, _, i in keyed[pos:pos + size]:
                sites[i].append(gid)
            pos += size
        assert pos == len(sites)
        out.extend(tuple(s) for s in sites)  # already in site_id order
    return out


# --------------------------------------------------------------------------
# Customers
# --------------------------------------------------------------------------

def customer_counts(rows: list[dict[str, str]], cpp: Fraction) -> list[int]:
    """round(population * cpp) per ZIP with an exact carry within each state,
    so each state's total is round(state population * cpp)."""
    counts = []
    cum: dict[str, Fraction] = {}
    half = Fraction(1, 2)
    for r in rows:
        st = r["state"]
        before = cum.get(st, Fraction(0))
        after = before + int(r["population"] or 0) * cpp
        cum[st] = after
        counts.append(math.floor(after + half) - math.floor(before + half))
    return counts


def write_customers(path: Path, rows: list[dict[str, str]], counts: list[int],
                    seed: str) -> int:
    lang_codes = [l for l, _ in LANGUAGES]
    lang_cum = _cumulative([w for _, w in LANGUAGES])
    plan_cum = _cumulative([p[1] for p in SERVICE_PLANS])
    plans = [(name, lo, (hi - lo) // FEE_STEP_CENTS + 1) for name, _, lo, hi in SERVICE_PLANS]
    dom_cum = _cumulative([w for _, w in EMAIL_DOMAINS])
    domains = [d for d, _ in EMAIL_DOMAINS]
    names = {l: (NAMES[l][0], len(NAMES[l][0]), NAMES[l][1], len(NAMES[l][1]))
             for l in lang_codes}
    bis = bisect.bisect_right

    # Process state by state (sorted), postcodes ascending within a state.
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["state"], rows[i]["postcode"]))
    email_next: dict[tuple[str, str, str], int] = {}
    fallback_used: set[int] = set()
    cid = 0
    header = ("customer_id,msisdn,email,postcode,language,services,"
              "monthly_fee,avg_bill_3m,currency\n")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(header)
        buf: list[str] = []
        cur_state = None
        rng = None
        used: set[int] = set()
        codes: tuple[int, ...] = ()
        for i in order:
            n = counts[i]
            r = rows[i]
            st = r["state"]
            if st != cur_state:
                cur_state = st
                rng = random.Random(f"{seed}:customers:{st}")
                codes = AREA_CODES.get(st, (FALLBACK_AREA_CODE,))
                # Area codes are disjoint between states, so a per-state set
                # suffices (the shared fallback code keeps one global set).
                used = fallback_used if codes == (FALLBACK_AREA_CODE,) else set()
            rand = rng.random
            ncodes = len(codes)
            pc = r["postcode"]
            for _ in range(n):
                cid += 1
                lang = lang_codes[bis(lang_cum, rand())]
                # msisdn: +1 NPA NXX XXXX, NXX in 200..999 and not N11.
                if rand() < P_NO_MSISDN:
                    msisdn = ""
                else:
                    npa = codes[int(rand() * ncodes)]
                    while True:
                        nxx = 200 + int(rand() * 800)
                        if nxx % 100 == 11:
                            continue
                        num = (npa * 1000 + nxx) * 10000 + int(rand() * 10000)
                        if num not in used:
                            used.add(num)
                            break
                    msisdn = f"+1{num}"
                # email: first.last.NNN@example.{com,org,net}; NNN unique per
                # (first, last, domain) so addresses never repeat.
                fl, nf, ll, nl = names[lang]
                first = fl[int(rand() * nf)]
                last = ll[int(rand() * nl)]
                dom = domains[bis(dom_cum, rand())]
                u = rand()
                no_email = rand() < P_NO_EMAIL
                key = (first, last, dom)
                k = email_next.get(key)
                k = 100 + int(u * 900) if k is None else k + 1 + int(u * 7)
                email_next[key] = k
                email = "" if no_email else f"{first}.{last}.{k}@{dom}"
                sname, lo, nsteps = plans[bis(plan_cum, rand())]
                fee = lo + FEE_STEP_CENTS * int(rand() * nsteps)
                bp = int(rand() * 6001) - 3000  # -30.00% .. +30.00%
                bill = (fee * (10000 + bp) + 5000) // 10000
                buf.append(f"C{cid:08d},{msisdn},{email},{pc},{lang},{sname},"
                           f"{fee // 100}.{fee % 100:02d},{bill // 100}.{bill % 100:02d},USD\n")
            if len(buf) >= 20000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return cid


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gazetteer", type=Path, default=None,
                   help=f"gazetteer CSV (default: {DEFAULT_GAZETTEER}, falling back to "
                        f"the committed slice {COMMITTED_SLICE.relative_to(REPO_ROOT)})")
    p.add_argument("--states", default="RI,CT",
                   help="comma-separated state codes, or ALL (default: RI,CT)")
    p.add_argument("--seed", default="42", help="RNG seed (default: 42)")
    p.add_argument("--people-per-site", type=int, default=3000)
    p.add_argument("--customers-per-person", type=Fraction, default=Fraction("0.005"),
                   help="exact decimal, e.g. 0.005 (default)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--write-slice", type=Path, default=None,
                   help="also write the filtered gazetteer rows (source columns) here")
    a = p.parse_args(argv)
    if a.people_per_site < 1:
        p.error("--people-per-site must be >= 1")
    if a.customers_per_person < 0:
        p.error("--customers-per-person must be >= 0")
    return a


def main(argv=None) -> int:
    t0 = time.perf_counter()
    a = parse_args(argv)
    gaz = a.gazetteer
    if gaz is None:
        gaz = DEFAULT_GAZETTEER
        if not gaz.exists() and COMMITTED_SLICE.exists():
            print(f"note: {DEFAULT_GAZETTEER} not found, using {COMMITTED_SLICE}",
                  file=sys.stderr)
            gaz = COMMITTED_SLICE
    if a.states.strip().upper() == "ALL":
        states = None
    else:
        states = {s.strip().upper() for s in a.states.split(",") if s.strip()}
        if not states:
            raise SystemExit("--states: no state given")
    seed = str(a.seed)

    rows = read_gazetteer(gaz, states)
    if states is not None:
        found = {r["state"] for r in rows}
        if states - found:
            raise SystemExit(f"{gaz}: no rows for state(s) {sorted(states - found)}")
    if not rows:
        raise SystemExit(f"{gaz}: no rows")
    # Only ZIPs with a usable centroid take part.
    geo_rows = []
    for r in rows:
        try:
            lat, lon = float(r["lat"]), float(r["lon"])
        except ValueError:
            continue
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            geo_rows.append(r)

    a.out.mkdir(parents=True, exist_ok=True)
    if a.write_slice is not None:
        a.write_slice.parent.mkdir(parents=True, exist_ok=True)
        write_csv(a.write_slice, GAZETTEER_COLUMNS,
                  ([r[c] for c in GAZETTEER_COLUMNS] for r in rows))

    tz_fixed = 0
    pc_rows = []
    for r in geo_rows:
        tz = clean_timezone(r["timezone"], r["state"])
        tz_fixed += tz != r["timezone"]
        pc_rows.append((r["postcode"], fmt_coord(float(r["lat"])), fmt_coord(float(r["lon"])),
                        str(int(r["population"] or 0)), tz, r["city"], r["state"]))
    write_csv(a.out / "postcodes.csv",
              ["postcode", "lat", "lon", "population", "timezone", "city", "state"], pc_rows)
    t1 = time.perf_counter()

    sites = make_sites(geo_rows, seed, a.people_per_site)
    write_csv(a.out / "sites.csv", ["site_id", "lat", "lon", "radius_km", "group_id"], sites)
    n_groups = len({s[4] for s in sites})
    t2 = time.perf_counter()

    counts = customer_counts(geo_rows, a.customers_per_person)
    n_cust = write_customers(a.out / "customers.csv", geo_rows, counts, seed)
    t3 = time.perf_counter()

    print(f"{len(pc_rows)} postcodes ({tz_fixed} timezone(s) repaired), "
          f"{len(sites)} sites in {n_groups} groups, {n_cust} customers -> {a.out}  "
          f"[postcodes {t1 - t0:.1f}s, sites {t2 - t1:.1f}s, customers {t3 - t2:.1f}s, "
          f"total {t3 - t0:.1f}s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
