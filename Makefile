# troupe — `make help` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

GO       ?= go
BIN      := $(CURDIR)/bin
MODULES  := events cmd/troupe services/renderer services/applier services/health services/history deploy test/cluster test/e2e test/chaos examples/notifier examples/cdevents examples/policygate examples/approvalgate
PKGS     := $(addprefix ./,$(addsuffix /...,$(MODULES)))
STATICCHECK_VERSION := v0.8.2
CLUSTER_BINS := $(addprefix $(BIN)/,etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

# Stamp the commit into what `troupe version` and the services' $SRV.INFO say (Go does not by
# default in a workspace); off outside a git checkout, where there is none to stamp.
BUILDVCS := $(shell git rev-parse --git-dir >/dev/null 2>&1 && echo true || echo false)

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: deploy-deps ## build the troupe CLI into ./bin: troupe (lean) and troupe-dev (with the services in, what `troupe dev` runs; and troupe's chart, what `troupe install` installs)
	$(GO) build -buildvcs=$(BUILDVCS) -tags lean -o $(BIN)/troupe ./cmd/troupe
	$(GO) build -buildvcs=$(BUILDVCS) -o $(BIN)/troupe-dev ./cmd/troupe

.PHONY: run
run: build cluster-bin ## start troupe dev with a local cluster, take the example chart through install, upgrade and rollback, leave it running (ONCE=1: stop after)
	TROUPE_RUN_ONCE=$(or $(ONCE),$(TROUPE_RUN_ONCE)) ./hack/run.sh

.PHONY: chromium
chromium: ## install headless Chromium from Debian's packages where missing: the web UI's tests drive it
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
		{ echo "installing Chromium (Debian's package) for the web UI's tests"; \
		  $(if $(filter 0,$(shell id -u)),,sudo )apt-get update -qq && $(if $(filter 0,$(shell id -u)),,sudo )apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

.PHONY: screenshots
screenshots: build cluster-bin nats-bin chromium ## drive the web UI in headless Chromium through a release, a rollback and a dead letter, writing each page to docs/screenshots/ (the README shows them)
	TROUPE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestWebUI$$' ./test/e2e

.PHONY: test
test: cluster-bin nats-bin deploy-deps chromium ## run every test (real embedded nats-server, real local Kubernetes API server), with the race detector
	$(GO) test -race -count=1 $(PKGS)

.PHONY: chaos
chaos: cluster-bin ## the chaos harness, long: CHAOS_REVISIONS revisions (default 300; rollbacks and uninstalls on top) over CHAOS_RELEASES releases (30) under SIGKILLs and NATS faults; prints the table, fails on any loss
	CHAOS_REVISIONS=$(or $(CHAOS_REVISIONS),300) CHAOS_RELEASES=$(or $(CHAOS_RELEASES),30) CHAOS_PARALLEL=$(or $(CHAOS_PARALLEL),5) \
		$(GO) test -count=1 -timeout 3h -v -run '^TestChaos$$' ./test/chaos

.PHONY: cluster-bin
cluster-bin: $(CLUSTER_BINS) ## build etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok (and helm, for the bench) from source into ./bin

$(CLUSTER_BINS) &: test/cluster/tools/go.mod test/cluster/tools/go.sum test/cluster/tools/build.sh
	@echo "Building the local Kubernetes cluster from source: ~10 minutes the first time, seconds after."
	test/cluster/tools/build.sh $(BIN)
	@touch $(CLUSTER_BINS)

.PHONY: nats-bin
nats-bin: $(BIN)/nats-server ## build nats-server, at the version events/go.mod pins, into ./bin (the NATS fault tests run it as processes)

$(BIN)/nats-server: events/go.mod events/go.sum
	cd events && $(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

.PHONY: cluster-up
cluster-up: cluster-bin ## run a local cluster in the background; kubeconfig in .troupe/kubeconfig
	$(GO) build -o $(BIN)/troupe-cluster ./test/cluster/cmd/troupe-cluster
	./hack/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## stop the cluster of cluster-up and every process it started
	./hack/cluster-down.sh

.PHONY: fuzz
fuzz: ## fuzz the event decoder for 30s
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=30s ./events

.PHONY: bench
bench: cluster-bin ## troupe vs helm end to end (the headline), then the events SDK vs raw nats.go, the renderer vs helm template, the applier vs client-go SSA, the health watcher's latency and memory
	$(GO) run ./cmd/troupe/internal/bench
	@echo
	$(GO) run ./events/internal/bench
	@echo
	$(GO) run ./services/renderer/internal/bench
	$(GO) run ./services/applier/internal/bench
	@echo
	$(GO) run ./services/health/internal/bench

.PHONY: bench-scale
bench-scale: cluster-bin nats-bin ## long (~1 hour): N=100,500,1000 podinfo releases installed, upgraded and rolled back at once: troupe vs the cluster's limit (client-go SSA + kstatus) vs helm, with every process's CPU and peak RSS (ARGS: e.g. ARGS='-n 100 -sides limit,troupe')
	$(GO) run ./cmd/troupe/internal/benchscale $(ARGS)

.PHONY: images
images: ## build an OCI image of each service into ./bin/images (an OCI layout and a tarball each), with no Docker daemon
	$(GO) run ./deploy/images -out $(BIN)/images

.PHONY: deploy-deps
deploy-deps: ## package the troupe chart's dependency (the NATS chart, from ../shared/fixtures) into deploy/charts/troupe/charts, as `helm dependency build` would
	$(GO) run ./deploy/charts/deps

.PHONY: generate
generate: ## regenerate the JSON Schemas of the event catalog and the chart's values table; copy Helm's template engine and chart loader again (after a Helm upgrade)
	cd events && $(GO) generate ./...
	cd services/renderer && $(GO) generate ./...
	cd cmd/troupe && $(GO) generate ./...
	cd deploy && $(GO) generate ./...

.PHONY: lint
lint: $(BIN)/staticcheck ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@big=$$(git ls-files -z 2>/dev/null | xargs -0 -r du -k | awk '$$1 > 2048 {print $$2}'); if [ -n "$$big" ]; then echo "tracked files over 2 MB (a build output?):"; echo "$$big"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags lean ./cmd/troupe/
	$(BIN)/staticcheck $(PKGS)

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: tidy
tidy: ## go mod tidy in every module
	for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done
	cd test/cluster/tools && GOWORK=off $(GO) mod tidy

.PHONY: clean
clean: ## remove build outputs and the dev store
	rm -rf $(BIN) .troupe
