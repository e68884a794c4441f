# The set-up a newcomer needs: `make demo` runs the whole pipeline on the
# embedded Kafka and the committed demo data, then keeps serving the NOC API
# and the status page until Ctrl-C (`make demo DEMO_FLAGS=--exit-when-done`
# stops after the summary, as CI does); `make test` runs every test.
.PHONY: demo test e2e eval lint bench check-fmt clean deploy-check

CARGO ?= cargo
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
OUTAGECTL = $(or $(CARGO_TARGET_DIR),target)/release/outagectl
OUTAGED = $(or $(CARGO_TARGET_DIR),target)/release/outaged
DEMO_FLAGS ?=

demo:
	$(CARGO) build --release --bin outaged --bin outagectl
	$(OUTAGED) demo --out out/demo $(DEMO_FLAGS)

# Unit tests, contract tests and the Kafka integration tests against the
# embedded broker (librdkafka's mock cluster), plus the data generator's tests.
test:
	$(CARGO) test --all-targets
	python3 scripts/test_gen_demo_data.py

# The real parts on loopback (Tansu from PyPI, Kannel from Debian, an SMTP
# server from PyPI; scripts/e2e.sh starts and stops them): the Kafka
# integration tests against Tansu, and the daemon through Kannel and SMTP.
e2e:
	bash scripts/e2e.sh

# The deploy/ files checked without a cluster, a container engine or a
# running systemd (scripts/deploy_check.py says how): the Kubernetes
# manifests against the Kubernetes schemas (base and rendered overlay), the
# ConfigMap through `outaged --check`, the systemd units with
# systemd-analyze, the Containerfile with hadolint. Installs its tools
# itself (.venv-deploy from PyPI, Debian's systemd if missing).
deploy-check:
	bash scripts/deploy_check.sh $(OUTAGED)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Correlator quality on the shipped scenarios, in all three input formats
# (native, VES, TMF642): precision, recall, ARI, latency, noise incidents.
eval:
	$(CARGO) build --release --bin outagectl
	python3 scripts/eval.py --outagectl $(OUTAGECTL)

# Throughput and memory as JSON (out/bench/correlator.json: correlator and
# the 1M-customer fan-out; out/bench/notify.json: SMS and SMTP dispatch,
# the rate limiter), then the batch
# DBSCAN baseline on the same scenarios (out/bench/dbscan.json; scikit-learn
# in a local venv, .venv-bench). Figures and how to read them: BENCHMARKS.md.
bench:
	mkdir -p out/bench
	$(CARGO) bench --bench correlator | tee out/bench/correlator.json
	$(CARGO) bench --bench notify | tee out/bench/notify.json
	$(CARGO) build --release --bin outagectl
	test -x .venv-bench/bin/python || python3 -m venv .venv-bench
	.venv-bench/bin/pip install -q -r scripts/requirements-bench.txt
	.venv-bench/bin/python scripts/bench_dbscan.py --outagectl $(OUTAGECTL) --scale-alarms 100000 --json out/bench/dbscan.json

clean:
	rm -rf out
