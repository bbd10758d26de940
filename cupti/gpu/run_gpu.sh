#!/bin/sh
# GPU checks for the CUPTI agent (run on the GPU machine from the repository root,
# with build/ carried: cupti/build/libprofilemate.so and the pmdrain binary).
#   cupti/gpu/run_gpu.sh test   # agent vs torch.profiler on the same workloads (exit 1 on mismatch)
#   cupti/gpu/run_gpu.sh bench  # throughput / CPU / memory table
# Env: PYTHON (python3), AGENT (cupti/build/libprofilemate.so), PMDRAIN (cupti/build/pmdrain), OUT (cupti/build/gpu-out)
set -eu
PYTHON=${PYTHON:-python3}
AGENT=${AGENT:-cupti/build/libprofilemate.so}
PMDRAIN=${PMDRAIN:-cupti/build/pmdrain}
OUT=${OUT:-cupti/build/gpu-out}
mkdir -p "$OUT"
G=cupti/gpu
case "${1:-test}" in
test)
	"$PYTHON" $G/workloads.py profile --out "$OUT/torch.json"
	"$PMDRAIN" -agent "$AGENT" -start nodes -summary "$OUT/agent_nodes.json" -raw "$OUT" -- \
		"$PYTHON" $G/workloads.py run --roles "$OUT/roles.json"
	cp "$OUT/roles.json" "$OUT/roles_nodes.json"
	"$PMDRAIN" -agent "$AGENT" -start graph -summary "$OUT/agent_graph.json" -- \
		"$PYTHON" $G/workloads.py run --roles "$OUT/roles_graph.json"
	"$PYTHON" $G/compare.py --agent "$OUT/agent_nodes.json" --roles "$OUT/roles_nodes.json" --torch "$OUT/torch.json" \
		--agent-graph "$OUT/agent_graph.json"
	;;
bench)
	"$PYTHON" $G/bench.py run --agent "$AGENT" --pmdrain "$PMDRAIN" --out "$OUT/bench.json" 
	;;
*) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac
