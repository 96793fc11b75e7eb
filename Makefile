# Lethe's build and test entry points. `make test` is the one command that
# checks everything, on a fresh machine too: it installs the pinned tools
# first. CI (.ci/run) calls exactly this target.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

# Pinned tool versions. The protoc plugins
# match the protobuf and grpc versions the modules use, so generated code is
# byte-identical wherever it is regenerated.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2
GOCYCLO_VERSION            := v0.6.0
GHZ_VERSION                := v0.93.0

# Tools install into the repository, so a pinned version never mixes with
# whatever else the machine has.
TOOLBIN := $(CURDIR)/.bin
export PATH := $(TOOLBIN):$(PATH)

# Every module of the workspace, in go.work order.
MODULES := $(shell go list -m -f '{{.Dir}}')

# Keep the race-enabled suite within a 2-core machine's means.
GOTEST_FLAGS ?= -race -count=1 -timeout 15m

.PHONY: test tools ghz generate lint vet staticcheck cyclo check-generate check-versions go-test bench bench-restart fuzz-wire soak-topology run

## test: everything CI checks — lint, generated code, versions, vet, staticcheck, complexity, race tests of every module
test: tools lint check-generate check-versions vet staticcheck cyclo go-test

## tools: install the pinned code generators and linters into .bin/
tools:
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLBIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLBIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(TOOLBIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	GOBIN=$(TOOLBIN) go install github.com/fzipp/gocyclo/cmd/gocyclo@$(GOCYCLO_VERSION)

# The API's descriptors with their comments, which reflection serves
# (gen/go/descriptorset).
DESCRIPTORS := buf build --as-file-descriptor-set --exclude-imports -o gen/go/descriptorset/lethe.binpb --path proto/lethe

# The OpenAPI document of the HTTP/JSON API, from those descriptors.
OPENAPI := (cd tools && go run ./openapi -o ../docs/openapi.json)

## ghz: install the pinned gRPC load generator that tools/load/check.sh drives
ghz:
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

## generate: regenerate Go code from the protos (offline, local plugins)
generate:
	buf format -w proto
	buf format -w platform/internal/kittest/proto
	buf generate
	buf generate --template buf.gen.kittest.yaml
	$(DESCRIPTORS)
	$(OPENAPI)

## lint: buf lint, buf format, gofmt
lint:
	buf lint
	buf format -d --exit-code proto
	buf format -d --exit-code platform/internal/kittest/proto
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

## check-generate: regenerate (Go code, descriptors, docs/openapi.json) in a clean copy and fail on any difference from what is committed
check-generate:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$$tmp"; \
	(cd "$$tmp" && buf generate && buf generate --template buf.gen.kittest.yaml && $(DESCRIPTORS) && $(OPENAPI)); \
	diff -r gen "$$tmp/gen" && diff -r platform/internal/kittest/gen "$$tmp/platform/internal/kittest/gen" \
	  && diff docs/openapi.json "$$tmp/docs/openapi.json" \
	  || { echo "generated code differs from the protos: run 'make generate' and commit"; exit 1; }

## check-versions: every module requires the same version of each shared dependency
check-versions:
	@awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&NF>=2{print $$1, $$2} /^require [^(]/{print $$2, $$3}' \
	  $$(for m in $(MODULES); do echo $$m/go.mod; done) | grep -v '^github.com/lethe-privacy/' | sort -u \
	  | awk '{v[$$1]=v[$$1] " " $$2; n[$$1]++} END{bad=0; for (p in n) if (n[p]>1) {print "modules disagree on " p ":" v[p]; bad=1} exit bad}'

## vet: go vet every module
vet:
	@for m in $(MODULES); do echo "vet $${m#$(CURDIR)/}"; (cd $$m && go vet ./...); done

## staticcheck: staticcheck every module
staticcheck:
	@for m in $(MODULES); do echo "staticcheck $${m#$(CURDIR)/}"; (cd $$m && staticcheck ./...); done

## cyclo: no hand-written function above cyclomatic complexity CYCLO_MAX (docs/design.md); tests and generated code are exempt
CYCLO_MAX := 18
cyclo:
	@files=$$(git ls-files --cached --others --exclude-standard '*.go' ':!:*_test.go' | xargs grep -L '^// Code generated .* DO NOT EDIT\.$$'); \
	gocyclo -over $(CYCLO_MAX) $$files || { echo "split the functions above (complexity over $(CYCLO_MAX)): see docs/design.md"; exit 1; }

## go-test: race-enabled tests of every module
go-test:
	@for m in $(MODULES); do (cd $$m && go test $(GOTEST_FLAGS) ./...); done

## bench: the benchmarks behind docs/benchmarks.md
bench:
	cd tools && go test -run '^$$' -bench DevStartup -benchtime 5x ./lethe/
	cd tools && go test -run '^$$' -bench ConsentMemory -benchtime 1x -v ./lethe/
	cd platform && go test -run '^$$' -bench Chain -benchtime 20000x ./server/
	cd platform && go test -run '^$$' -bench HTTPJSON -benchtime 20000x ./server/
	cd platform && go test -run '^$$' -bench BatchPut -benchtime 5000x ./store/
	cd platform && go test -run '^$$' -bench OutboxCommit -benchtime 20000x ./outbox/
	cd platform && go test -run '^$$' -bench Relay -benchtime 10000x ./outbox/
	cd tools && go test -run '^$$' -bench Pipeline -benchtime 2000x ./lethe/internal/flows/tasks/
	cd services/registry && go test -run '^$$' -bench . -benchmem ./internal/routing/
	cd services/consent && go test -run '^$$' -bench . -benchmem ./internal/decision/
	cd tools && go test -run '^$$' -bench CheckOverGRPC -benchtime 20000x ./lethe/internal/flows/consent/
	cd tools && go test -run '^$$' -bench BannerDecisions -benchtime 5000x ./lethe/internal/flows/consent/
	cd tools && go test -run '^$$' -bench ChecksByChain -benchtime 20000x ./lethe/internal/flows/consent/
	cd services/registry && go test -run '^$$' -bench RouteByChain -benchtime 20000x .
	cd services/retention && go test -run '^$$' -bench . -benchtime 20x ./internal/schedule/
	cd tools && go test -run '^$$' -bench . -benchtime 3x -timeout 30m ./lethe/internal/flows/retention/
	cd tools && go test -run '^$$' -bench Erasures -benchtime 10000x -timeout 20m ./lethe/internal/flows/dsar/

## bench-restart: restart-to-serving of each deployable on realistic stores (1M consent records, 100k DSARs,
## 1M retention subjects, 1,000 systems); loads them first: about 25 minutes on 2 shared cores. Prints the table of
## docs/operations.md "What fails when a pod dies"; RESTART_FLAGS=-restart.report=FILE also writes it to FILE.
RESTART_FLAGS ?=
bench-restart:
	cd tools && go test -run '^$$' -bench RestartToServing -benchtime 1x -timeout 90m -v ./lethe/ $(RESTART_FLAGS)

## fuzz-wire: the long wire-fuzzing run against lethe dev; writes docs/wirefuzz.md and fails on any misbehaviour
WIREFUZZ_INPUTS ?= 5000
WIREFUZZ_SEED   ?= 1
fuzz-wire:
	cd tools && go test -run '^TestWireFuzz$$' -count=1 -timeout 2h ./lethe/ \
	  -wirefuzz.inputs $(WIREFUZZ_INPUTS) -wirefuzz.seed $(WIREFUZZ_SEED) -wirefuzz.heavy 0 -wirefuzz.timeout 20s \
	  -wirefuzz.report $(CURDIR)/docs/wirefuzz.md

## soak-topology: the production topology test's fault sequence for SOAK_ROUNDS rounds, each partitioning a NATS node away for SOAK_PARTITION; writes its counts to docs/operations.md
SOAK_ROUNDS ?= 10
SOAK_PARTITION ?= 30s
soak-topology:
	cd deploy && go test -race -count=1 -run '^TestProductionTopology$$' -timeout 2h -v . \
	  -topology.rounds $(SOAK_ROUNDS) -topology.partition $(SOAK_PARTITION) -topology.report $(CURDIR)/docs/operations.md

## run: start the whole platform in one process (as the README says)
run:
	go run ./tools/lethe dev
