# profilemate-trace — `make help` lists the targets.
SHELL       := /bin/bash
GO          ?= go
PYTHON      ?= python3
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN         := bin/profilemate-trace
LDFLAGS     := -X main.version=$(VERSION)
GPU_DIST    := .gpu
GOTESTFLAGS ?=
# go-nvml declares deprecated NVML calls; their warnings are noise in every cgo build.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.DEFAULT_GOAL := all

help: ## list targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

all: build ## build the CLI and the agent (bin/)

build: agent ## build bin/profilemate-trace and bin/libprofilemate.so
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/profilemate-trace
	cp cupti/build/libprofilemate.so bin/libprofilemate.so

agent: ## build the CUPTI agent (cupti/build/libprofilemate.so)
	$(MAKE) -C cupti

testlibs: ## build the fake libcuda, mock libcupti and e2e program used by tests
	$(MAKE) -C cupti testlibs

abi-check: ## compile the agent's declared CUPTI ABI against real CUDA 12.9 and 13.0 headers (PyPI wheels)
	$(MAKE) -C cupti abi-check

generate: ## regenerate record layouts (C/Go/Python) and eBPF objects
	$(GO) generate ./internal/record
	$(MAKE) -C bpf generate

test: build testlibs ## run every test that needs no GPU (eBPF tests run for real as root; real vLLM tests with PM_VLLM_PYTHONS set)
	$(GO) test $(GOTESTFLAGS) ./...
	$(MAKE) test-pyhook

test-pyhook: ## Python hook tests; with PM_VLLM_PYTHONS=venv/bin/python[:…] also against real vLLM on the CPU (pyhook/tests/install_vllm_cpu.sh)
	@if [ -n "$$PM_VLLM_PYTHONS" ]; then $(PYTHON) -m pytest -q pyhook/tests; \
	else echo "PM_VLLM_PYTHONS unset: skipping the real-vLLM tests (install a venv with pyhook/tests/install_vllm_cpu.sh)"; \
	$(PYTHON) -m pytest -q pyhook/tests -m "not real_vllm"; fi

bpf-check: ## fail if the committed eBPF object/bindings differ from a fresh clang-19 build
	$(MAKE) -C bpf check

validate-deploy: ## validate the Kubernetes manifests against offline schemas
	kubernetes-validate --strict -k 1.30.0 deploy/kubernetes/*.yaml
	kubernetes-validate --strict -k 1.37.0 deploy/kubernetes/*.yaml

bench-pyhook: ## the hook's CPU cost per scheduler step and block operation (needs a real-vLLM venv)
	$(PYTHON) pyhook/bench/bench_hook.py

demo: build ## write the ProfileMate files, a Perfetto trace and the HTML report from the real H100 bundle in testdata/
	rm -rf demo-out
	$(BIN) export -o demo-out testdata/h100/session.tar.zst
	$(BIN) export --format perfetto -o demo-out/trace.perfetto.json testdata/h100/session.tar.zst
	$(BIN) report -o demo-out/report.html testdata/h100/session.tar.zst
	@echo; echo "demo-out/: the session files, trace.perfetto.json (open in ui.perfetto.dev) and report.html"; ls demo-out

gpu-dist: build ## stage what a GPU machine needs (binary, agent, hook, GPU scripts) in .gpu/
	rm -rf $(GPU_DIST) && mkdir -p $(GPU_DIST)
	cp $(BIN) cupti/build/libprofilemate.so $(GPU_DIST)/
	cp -r pyhook $(GPU_DIST)/pyhook
	[ -d cupti/gpu ] && cp -r cupti/gpu $(GPU_DIST)/cupti-gpu || true
	sh bpf/gpu/build-bundle.sh $(GPU_DIST)/ebpf
	cp -r scripts/gpu/* $(GPU_DIST)/

test-gpu: ## on a GPU machine: real CUDA/CUPTI tests against torch.profiler (needs `make gpu-dist` output in .gpu/)
	bash scripts/gpu/test-gpu.sh $(GPU_DIST)

inject-gpu: ## on a GPU machine: attach --inject=ptrace twice to a torch loop started without the agent; per-step kernel counts against torch.profiler (needs `make gpu-dist` output in .gpu/, root)
	bash scripts/gpu/inject-check.sh $(GPU_DIST)

gpu-carry: gpu-dist ## pack .gpu/ and the staged vLLM (scripts/gpu/vllm/prepare.sh) into .gpu-carry/ (under the device tool's 64 MiB)
	rm -rf .gpu-carry && mkdir -p .gpu-carry
	strip $(GPU_DIST)/profilemate-trace  # symbols stay in bin/; 64 MiB is tight
	tar -C $(GPU_DIST) --exclude=./ebpf -cf - . | xz -9 -T2 > .gpu-carry/dist.tar.xz  # ebpf/: the eBPF test bundle (make test-gpu), not needed here
	[ -f .gpu-vllm/site.tar.xz ] && cp .gpu-vllm/site.tar.xz .gpu-carry/ || echo "no .gpu-vllm/site.tar.xz: run scripts/gpu/vllm/prepare.sh for the vLLM runs"
	du -sh .gpu-carry/*

e2e-vllm: ## on a GPU machine: real vLLM profiled by run and attach, overhead by mode (needs .gpu-carry/ from `make gpu-carry`)
	bash scripts/gpu/vllm/e2e-vllm.sh

bench-gpu: ## on a GPU machine: overhead benchmarks (untraced, dormant, graph, nodes, torch.profiler)
	bash scripts/gpu/bench-gpu.sh $(GPU_DIST)

fmt: ## format Go and C sources
	gofmt -w $$(git ls-files '*.go' | grep -v _bpfel.go)

clean: ## remove build outputs
	rm -rf bin $(GPU_DIST) demo-out
	$(MAKE) -C cupti clean

.PHONY: help all build agent testlibs abi-check generate test test-pyhook bpf-check validate-deploy bench-pyhook demo gpu-dist test-gpu inject-gpu gpu-carry e2e-vllm bench-gpu fmt clean
