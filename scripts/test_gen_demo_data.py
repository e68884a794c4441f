#!/usr/bin/env python3
"""Tests for gen_demo_data.py (stdlib unittest). Run: python3 scripts/test_gen_demo_data.py"""

import collections
import csv
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEN = HERE / "gen_demo_data.py"
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data" / "us_zip_gazetteer.csv"
SLICE = REPO / "data" / "demo" / "gazetteer_slice.csv"
GAZETTEER = SHARED if SHARED.exists() else SLICE
FILES = ("postcodes.csv", "sites.csv", "customers.csv")
MONEY = re.compile(r"^\d+\.\d{2}$")
E164 = re.compile(r"^\+1[2-9]\d{2}[2-9]\d{6}$")


def run(out: Path, *extra: str, seed: str = "42", states: str = "RI") -> None:
    subprocess.run([sys.executable, str(GEN), "--gazetteer", str(GAZETTEER),
                    "--states", states, "--seed", seed, "--out", str(out), *extra],
                   check=True, capture_output=True)


def rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class GenDemoDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        tmp = Path(cls._tmp.name)
        cls.a, cls.b, cls.c = tmp / "a", tmp / "b", tmp / "c"
        run(cls.a, "--write-slice", str(tmp / "a" / "slice.csv"))
        run(cls.b)
        run(cls.c, seed="7")

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_byte_identical_for_same_args(self):
        for name in FILES:
            self.assertEqual((self.a / name).read_bytes(), (self.b / name).read_bytes(), name)

    def test_seed_changes_synthetic_data(self):
        self.assertNotEqual((self.a / "customers.csv").read_bytes(),
                            (self.c / "customers.csv").read_bytes())
        self.assertEqual((self.a / "postcodes.csv").read_bytes(),
                         (self.c / "postcodes.csv").read_bytes())

    def test_line_endings_and_headers(self):
        for name in FILES:
            data = (self.a / name).read_bytes()
            self.assertNotIn(b"\r", data, name)
            self.assertTrue(data.endswith(b"\n"), name)
        self.assertEqual((self.a / "sites.csv").read_text().split("\n", 1)[0],
                         "site_id,lat,lon,radius_km,group_id")

    def test_postcodes(self):
        pcs = rows(self.a / "postcodes.csv")
        self.assertGreater(len(pcs), 0)
        for p in pcs:
            self.assertRegex(p["postcode"], r"^\d{5}$")
            self.assertTrue(p["timezone"].startswith("America/"), p)
        self.assertEqual([p["postcode"] for p in pcs], sorted(p["postcode"] for p in pcs))

    def test_sites_and_groups(self):
        sites = rows(self.a / "sites.csv")
        self.assertEqual(len(sites), len({s["site_id"] for s in sites}))
        self.assertGreaterEqual(len(sites), len(rows(self.a / "postcodes.csv")))
        sizes = collections.Counter(s["group_id"] for s in sites)
        for gid, n in sizes.items():
            self.assertTrue(8 <= n <= 30, f"{gid} has {n} sites")
        for s in sites:
            self.assertRegex(s["site_id"], r"^S-RI-\d{6}$")
            self.assertRegex(s["group_id"], r"^G-RI-\d{4}$")
            self.assertTrue(0.8 <= float(s["radius_km"]) <= 15.0, s)

    def test_customers(self):
        postcodes = {p["postcode"] for p in rows(self.a / "postcodes.csv")}
        custs = rows(self.a / "customers.csv")
        self.assertGreater(len(custs), 1000)
        msisdns = [c["msisdn"] for c in custs if c["msisdn"]]
        emails = [c["email"] for c in custs if c["email"]]
        self.assertEqual(len(msisdns), len(set(msisdns)), "duplicate msisdn")
        self.assertEqual(len(emails), len(set(emails)), "duplicate email")
        self.assertLess(len(msisdns), len(custs))  # some dirty rows
        self.assertLess(len(emails), len(custs))
        for c in custs:
            self.assertIn(c["postcode"], postcodes)
            self.assertRegex(c["monthly_fee"], MONEY)
            self.assertRegex(c["avg_bill_3m"], MONEY)
            self.assertEqual(c["currency"], "USD")
            if c["msisdn"]:
                self.assertRegex(c["msisdn"], E164)
            if c["email"]:
                self.assertRegex(c["email"], r"^[a-z]+\.[a-z]+\.\d+@example\.(com|org|net)$")
            self.assertIn(c["language"], {"en", "es", "es-MX", "ru", "nl", "fr"})
            self.assertTrue(set(c["services"].split(";")) <= {"mobile", "voice", "broadband"})
        ids = [c["customer_id"] for c in custs]
        self.assertEqual(ids, [f"C{i:08d}" for i in range(1, len(custs) + 1)])

    def test_chunk_sizes_always_within_bounds(self):
        sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
        sys.path.insert(0, str(HERE))
        try:
            import gen_demo_data as g
        finally:
            sys.path.pop(0)
        import random
        for n in range(8, 2000):
            sizes = g.chunk_sizes(n, random.Random(n))
            self.assertEqual(sum(sizes), n)
            self.assertTrue(all(8 <= s <= 30 for s in sizes), (n, sizes))

    def test_regenerate_from_slice_is_identical(self):
        with tempfile.TemporaryDirectory() as d:
            out = Path(d)
            subprocess.run([sys.executable, str(GEN), "--gazetteer", str(self.a / "slice.csv"),
                            "--states", "RI", "--seed", "42", "--out", str(out)],
                           check=True, capture_output=True)
            for name in FILES:
                self.assertEqual((self.a / name).read_bytes(), (out / name).read_bytes(), name)


if __name__ == "__main__":
    unittest.main()
