#!/usr/bin/env python3
"""Load a `profilemate-trace export --format perfetto` trace in Perfetto's own trace processor
(the engine behind ui.perfetto.dev) and check that slices, GPU tracks and launch flows were
imported. Needs `pip install perfetto` and network access once (it downloads
trace_processor_shell). Usage: perfetto_check.py TRACE.json
"""
import sys

from perfetto.trace_processor import TraceProcessor

tp = TraceProcessor(trace=sys.argv[1])
q = lambda s: tp.query(s).as_pandas_dataframe()
slices = q("select count(*) n from slice").n[0]
flows = q("select count(*) n from flow").n[0]
gpu = q("select count(*) n from process where name like 'GPU %'").n[0]
errors = q("select name, value from stats where severity in ('error', 'data_loss') and value > 0")
print(f"slices {slices}, flows {flows}, GPU processes {gpu}")
print(errors.to_string())
ok = slices > 0 and flows > 0 and gpu > 0 and errors.empty
sys.exit(0 if ok else 1)
