# safeflow — see README.md. `make run` and `make test` work on a fresh machine
# with PostgreSQL on 127.0.0.1:5432 (or a DATABASE_URL / TEST_DATABASE_URL).
SHELL := /bin/bash

DATABASE_URL ?= postgres://root@127.0.0.1:5432/safeflow?sslmode=disable
HTTP_ADDR    ?= :8080
export DATABASE_URL HTTP_ADDR

# Tests use TEST_DATABASE_URL when set, else the local server when it answers,
# else testcontainers (Docker), else they fail saying how to provide one.
LOCAL_PG := $(shell (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && echo 'postgres://root@127.0.0.1:5432/postgres?sslmode=disable')
TEST_DATABASE_URL ?= $(LOCAL_PG)
export TEST_DATABASE_URL

.PHONY: all build run test lint contract postman bench clean

all: test

build:
	go build -o bin/api ./cmd/api

## run: the service on localhost, database created and migrated, with a fresh API key and a curl to paste
run: build
	@scripts/run.sh

## test: lint, then every test with the race detector against a real PostgreSQL, then the contract check
test: lint
	go test -race -count=1 ./...
	@$(MAKE) --no-print-directory contract

## contract: Redocly lints the spec; Portman's contract tests run against the built binary (scripts/contract.sh)
contract: build
	@scripts/contract.sh

## postman: regenerate postman/safeflow.postman_collection.json from openapi.yaml
postman:
	cd tools/contract && npm ci --no-audit --no-fund --loglevel=error >/dev/null && \
		./node_modules/.bin/portman -l ../../openapi.yaml -c portman-config.json -o ../../postman/safeflow.postman_collection.json >/dev/null

## lint: formatting, vet, the one-way package direction (scripts/check-deps.sh), the alert rules and the dashboard
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	@scripts/check-deps.sh
	@command -v promtool >/dev/null || { echo "lint: promtool is missing (apt-get install prometheus; .ci/run installs it)"; exit 1; }
	promtool check rules deploy/prometheus/alerts.yml
	@python3 -c 'import json,sys; d=json.load(open("deploy/grafana/safeflow.json")); assert d["panels"] and all(t["expr"] for p in d["panels"] for t in p["targets"])' \
		|| { echo "lint: deploy/grafana/safeflow.json is not a dashboard with queries"; exit 1; }

## bench: throughput and latency of the safe flow over HTTP, with pgbench on the same server as the baseline
bench: build
	@scripts/bench.sh

clean:
	rm -rf bin
