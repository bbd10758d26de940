// Package cupti is the Go side of the in-process CUPTI agent (libprofilemate.so,
// built from csrc/ by `make -C cupti`).
//
// It provides the kernel-name demangler cache used by the exporters (Demangle),
// helpers that switch an agent's collection through its ring's control words
// (Enable, Disable, Yield, Detach, WaitAck), and, under cgo, a driver of the agent's C
// ring producer for tests. The agent itself has no Go runtime inside (DESIGN
// decision 1); its policy is documented in README.md beside this file.
//
// Demangle and the control helpers are pure Go so that packages built with
// CGO_ENABLED=0 (export, cmd) can use them; only the test driver of the C code
// needs cgo (cring_cgo.go, stubbed in cring_stub.go).
package cupti
