// Package export turns the raw streams of a session (CUPTI agent, eBPF, Python hook) into
// the ProfileMate output set and packs sessions into bundles.
//
// # Bundle format
//
// A bundle is a zstd-compressed POSIX tar (PAX headers). Every member lives under one
// top-level directory, the session's name (session_YYYYMMDD_HHMMSS), and mirrors the
// session directory:
//
//	session_…/metadata.json        session description (see README "metadata.json")
//	session_…/raw/<pid>.<src>.pmr  raw record streams, src = cupti | pyhook | ebpf
//	session_…/*.csv, *.json, *.txt the derived ProfileMate files
//
// Raw streams are the source of truth: `profilemate-trace export BUNDLE -o DIR` recreates
// every derived file from raw/ and metadata.json alone. Raw stream framing and record
// layouts are described in docs/record-format.md and generated from
// internal/record/schema/*.json.
//
// # Derived files
//
// Column order and units of every CSV are documented in the README's output reference;
// documented ProfileMate columns come first, in their documented order, and new columns
// follow them. Times named *_sec are seconds since the session start (metadata.json
// "start_monotonic_ns"); *_us are microseconds of GPU or CPU time.
package export
