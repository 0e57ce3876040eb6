# troupe — `make help` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

GO       ?= go
BIN      := $(CURDIR)/bin
MODULES  := events cmd/troupe
PKGS     := $(addprefix ./,$(addsuffix /...,$(MODULES)))
STATICCHECK_VERSION := v0.8.2

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the troupe CLI into ./bin
	$(GO) build -o $(BIN)/troupe ./cmd/troupe

.PHONY: run
run: build ## start troupe dev, send an event through it, and leave it running (Ctrl-C stops)
	./hack/run.sh

.PHONY: test
test: ## run every test (real embedded nats-server), with the race detector
	$(GO) test -race -count=1 $(PKGS)

.PHONY: fuzz
fuzz: ## fuzz the event decoder for 30s
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=30s ./events

.PHONY: bench
bench: ## measure the events SDK against raw nats.go JetStream, side by side
	$(GO) run ./events/internal/bench

.PHONY: generate
generate: ## regenerate the JSON Schemas of the event catalog
	cd events && $(GO) generate ./...

.PHONY: lint
lint: $(BIN)/staticcheck ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(BIN)/staticcheck $(PKGS)

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: tidy
tidy: ## go mod tidy in every module
	for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

.PHONY: clean
clean: ## remove build outputs and the dev store
	rm -rf $(BIN) .troupe
