#!/usr/bin/env python3
"""Tests of scripts/deploy_check.py: deploy/ as committed passes, and each
kind of mistake it is there to catch, made in a copy of deploy/, fails with
a line naming it. Run by scripts/deploy_check.sh (`make deploy-check`)
with .venv-deploy's python: `python scripts/test_deploy_check.py --outaged PATH`.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_check  # noqa: E402

OUTAGED: str | None = None


class DeployCheck(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.deploy = Path(self.tmp.name) / "deploy"
        shutil.copytree(deploy_check.ROOT / "deploy", self.deploy)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def edit(self, rel: str, old: str, new: str) -> None:
        p = self.deploy / rel
        text = p.read_text()
        self.assertIn(old, text, f"{rel} no longer holds {old!r}: update the test")
        p.write_text(text.replace(old, new, 1))

    def run_check(self, *only: str) -> tuple[int, list[str]]:
        args = ["--deploy", str(self.deploy)] + [f"--only={o}" for o in only]
        if OUTAGED:
            args += ["--outaged", OUTAGED]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = deploy_check.main(args)
        return rc, [ln for ln in out.getvalue().splitlines() if ln.startswith("FAIL")]

    def assert_fails(self, only: str, *needles: str) -> None:
        rc, fails = self.run_check(only)
        self.assertEqual(rc, 1, "the mistake was not caught")
        for n in needles:
            self.assertTrue(any(n in f for f in fails), f"no FAIL line with {n!r} in {fails}")

    def test_the_committed_deploy_folder_passes(self) -> None:
        rc, fails = self.run_check()
        self.assertEqual((rc, fails), (0, []))

    def test_a_misspelt_field_fails_the_schema(self) -> None:
        self.edit("k8s/base/api.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true")
        self.assert_fails("k8s", "Deployment/outage-api against", "readOnlyRootFileSystem", "readOnlyRootFilesystem wanted")

    def test_a_patch_of_nothing_fails_the_overlay(self) -> None:
        self.edit("k8s/overlays/example/correlator-single.yaml", "name: outage-correlator", "name: outage-correlater")
        self.assert_fails("k8s", "kubectl kustomize", "no resource matches strategic merge patch")

    def test_a_patch_target_selecting_nothing_fails(self) -> None:
        self.edit("k8s/overlays/example/kustomization.yaml", "labelSelector: app.kubernetes.io/part-of=outage",
                  "labelSelector: app.kubernetes.io/part-of=outages")
        self.assert_fails("k8s", "kafka-bootstrap.yaml: target", "selects no resource")

    def test_a_missing_resource_file_fails(self) -> None:
        (self.deploy / "k8s/base/pdb.yaml").unlink()
        self.assert_fails("k8s", "kubectl kustomize", "pdb.yaml")

    def test_a_pdb_that_blocks_every_drain_fails(self) -> None:
        (self.deploy / "k8s/overlays/example/correlator-pdb.yaml").unlink()
        self.edit("k8s/overlays/example/kustomization.yaml", "  - path: correlator-pdb.yaml\n", "")
        self.assert_fails("k8s", "minAvailable 1 with 1 replica(s) blocks every drain")

    def test_the_wrong_probe_or_role_fails(self) -> None:
        self.edit("k8s/base/dispatcher.yaml", "path: /readyz", "path: /healthz")
        self.edit("k8s/base/dispatcher.yaml", 'args: ["--role", "dispatcher"]', 'args: ["--role", "api"]')
        self.assert_fails("k8s", "readinessProbe on /readyz wanted", "should be --role dispatcher")

    def test_a_service_selecting_no_pod_fails(self) -> None:
        self.edit("k8s/base/api.yaml", "    app.kubernetes.io/component: api\n  ports:", "    app.kubernetes.io/component: apis\n  ports:")
        self.assert_fails("k8s", "Service outage-api selects no pods")

    @unittest.skipUnless(OUTAGED or "--outaged" in sys.argv, "needs --outaged")
    def test_a_key_outaged_does_not_know_fails_the_config(self) -> None:
        self.edit("k8s/base/configmap.yaml", "    concurrency = 64", "    concurency = 64")
        self.assert_fails("config", "unknown key `concurency`")

    @unittest.skipUnless(OUTAGED or "--outaged" in sys.argv, "needs --outaged")
    def test_a_bad_token_list_in_the_secret_fails_the_config(self) -> None:
        self.edit("k8s/base/secret.yaml", 'role="viewer"', 'role="admin"')
        self.assert_fails("config", "OUTAGE_API__TOKENS", "unknown value `admin`")

    @unittest.skipUnless(OUTAGED or "--outaged" in sys.argv, "needs --outaged")
    def test_a_bad_provider_in_the_unit_env_file_fails_the_config(self) -> None:
        self.edit("systemd/outage.env.example", 'max_in_flight=32', 'max_inflight=32')
        self.assert_fails("config", "outage.env.example through", "unknown key `max_inflight`")

    def test_a_unit_key_in_the_wrong_section_fails(self) -> None:
        self.edit("systemd/outaged@.service", "Restart=on-failure", "Restart=on-failure\nWantedBy=multi-user.target")
        self.assert_fails("systemd", "systemd-analyze verify outaged@api.service", "Unknown key")

    def test_a_weakly_hardened_unit_fails(self) -> None:
        for key in ("ProtectSystem=strict", "PrivateUsers=yes", "SystemCallFilter=@system-service",
                    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "CapabilityBoundingSet="):
            self.edit("systemd/outaged@.service", key + "\n", "")
        self.assert_fails("systemd", "systemd-analyze security outaged@all.service")

    def test_a_root_image_fails(self) -> None:
        self.edit("Containerfile", "USER 10001:10001\n", "")
        self.assert_fails("containerfile", "runs as root")

    def test_hadolint_findings_fail(self) -> None:
        self.edit("Containerfile", "--no-install-recommends libssl3=3.*", "libssl3")
        self.assert_fails("containerfile", "hadolint", "DL3008")


if __name__ == "__main__":
    if "--outaged" in sys.argv:
        i = sys.argv.index("--outaged")
        OUTAGED = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    unittest.main(verbosity=2)
