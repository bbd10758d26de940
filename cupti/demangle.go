package cupti

import (
	"strings"
	"sync"

	"github.com/ianlancetaylor/demangle"
)

// ShortMaxLength bounds the demangler's work for short labels (demangle.MaxLength
// takes a power of two: 1<<ShortMaxLength characters).
const ShortMaxLength = 12

// FullMaxLength bounds the full demangled form (1<<16 characters).
const FullMaxLength = 16

type demangled struct{ short, full string }

var demangleCache sync.Map // raw string -> demangled

// Demangle returns a short label and the full demangled form of a raw kernel
// name as CUPTI reports it. Names that are not Itanium-mangled (cuBLAS nvjet
// kernels, Triton kernels) and names the demangler rejects come back unchanged
// in both. Results are cached by raw string; safe for concurrent use.
//
// The short form drops parameters and template arguments
// ("at::native::vectorized_elementwise_kernel"); the full form keeps them.
func Demangle(raw string) (short, full string) {
	if v, ok := demangleCache.Load(raw); ok {
		d := v.(demangled)
		return d.short, d.full
	}
	d := demangleUncached(raw)
	demangleCache.Store(raw, d)
	return d.short, d.full
}

func demangleUncached(raw string) demangled {
	if !strings.HasPrefix(raw, "_Z") {
		return demangled{raw, raw}
	}
	full, err := demangle.ToString(raw, demangle.MaxLength(FullMaxLength))
	if err != nil {
		return demangled{raw, raw}
	}
	short, err := demangle.ToString(raw, demangle.NoParams, demangle.NoTemplateParams, demangle.MaxLength(ShortMaxLength))
	if err != nil || short == "" {
		short = full
	}
	return demangled{short, full}
}
