package cupti

import (
	"strings"
	"testing"
)

func TestDemangle(t *testing.T) {
	cases := []struct{ raw, short, fullContains string }{
		{"_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_15sin_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_clEvENKUlvE0_clEvEUlfE_NS_6detail5ArrayIPcLi2EEEEEviT0_T1_",
			"at::native::vectorized_elementwise_kernel<sin>", "{lambda(float)#1}"},
		{"_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_13AUnaryFunctorIfffNS0_15binary_internal10MulFunctorIfEEEESt5arrayIPcLm2EEEEviT0_T1_",
			"at::native::vectorized_elementwise_kernel<MulFunctor>", "MulFunctor<float>"},
		{"_ZN2at6native29vectorized_elementwise_kernelILi2ENS0_11FillFunctorIlEESt5arrayIPcLm1EEEEviT0_T1_",
			"at::native::vectorized_elementwise_kernel<FillFunctor>", "FillFunctor<long>"},
		{"_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_21CUDAFunctorOnSelf_addIfEESt5arrayIPcLm2EEEEviT0_T1_",
			"at::native::vectorized_elementwise_kernel<CUDAFunctorOnSelf_add>", "CUDAFunctorOnSelf_add<float>"},
		{"_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_17log1p_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_clEvENKUlvE0_clEvEUlfE_St5arrayIPcLm2EEEEviT0_T1_",
			"at::native::vectorized_elementwise_kernel<log1p>", "log1p_kernel_cuda"},
		{"nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "nvjet_sm90"},
		{"triton_poi_fused_add_0", "triton_poi_fused_add_0", "triton_poi_fused_add_0"},
		{"_Zbogus$", "_Zbogus$", "_Zbogus$"},
		{"", "", ""},
	}
	for _, c := range cases {
		s, f := Demangle(c.raw)
		if s != c.short || !strings.Contains(f, c.fullContains) {
			t.Errorf("Demangle(%q) = %q, %q; want short %q, full containing %q", c.raw, s, f, c.short, c.fullContains)
		}
		s2, f2 := Demangle(c.raw) // cached
		if s2 != s || f2 != f {
			t.Errorf("cache changed the result for %q", c.raw)
		}
	}
}

func BenchmarkDemangleCached(b *testing.B) {
	raw := "_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_15sin_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_clEvENKUlvE0_clEvEUlfE_NS_6detail5ArrayIPcLi2EEEEEviT0_T1_"
	Demangle(raw)
	for i := 0; i < b.N; i++ {
		Demangle(raw)
	}
}
