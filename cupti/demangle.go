package cupti

import (
	"regexp"
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
// ("at::native::vectorized_elementwise_kernel"); the full form keeps them. Generic kernels
// that PyTorch instantiates for every operator get the operator back as a hint, so that
// sin and mul do not share one label: "at::native::vectorized_elementwise_kernel<sin>",
// "…<MulFunctor>".
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
	} else if h := opHint(full); h != "" {
		short += "<" + h + ">"
	}
	return demangled{short, full}
}

// ATen's generic elementwise, reduction and distribution kernels carry the operator in their
// template arguments: an "at::native::<op>_kernel_cuda" lambda, or a functor. The innermost
// functor is the most specific (AUnaryFunctor<…, MulFunctor<float>> → MulFunctor).
var (
	opKernelRE  = regexp.MustCompile(`at::native::(?:[A-Za-z0-9_]+::)?([A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_kernel_cuda`)
	opFunctorRE = regexp.MustCompile(`([A-Za-z0-9_]*Functor[A-Za-z0-9_]*)`)
)

func opHint(full string) string {
	i := strings.IndexByte(full, '<')
	if i < 0 || !strings.Contains(full[:i], "at::native::") {
		return ""
	}
	args := full[i:]
	if m := opKernelRE.FindStringSubmatch(args); m != nil {
		return m[1]
	}
	var last string
	for _, m := range opFunctorRE.FindAllString(args, -1) {
		switch m {
		case "AUnaryFunctor", "BUnaryFunctor", "BinaryFunctor", "UnaryFunctor":
			if last == "" {
				last = m
			}
			continue
		}
		last = m
	}
	return last
}
