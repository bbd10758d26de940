package export

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/profilemate/profilemate-trace/cupti"
)

// Kernel categories. GPU time of each kernel is counted in exactly one.
const (
	CatAttention     = "attention"
	CatFFN           = "ffn"
	CatMoE           = "moe"
	CatCommunication = "communication"
	CatOther         = "other"
	CatGraph         = "cuda_graph" // whole-graph replays at --detail graph: nodes not recorded one by one
	CatMemcpy        = "memcpy"     // copies
	CatMemset        = "memset"     // memsets
)

// DefaultKernelRules are the built-in classification rules, tried in order; the first
// regular expression that matches the kernel's short demangled name or its raw name
// (case-insensitive) gives the category; no match is "other". GEMMs are counted as ffn:
// by name a QKV/output projection GEMM cannot be told from an MLP GEMM, so "attention"
// is the attention kernels proper (flash/paged/MLA attention, KV-cache writes, rotary).
var DefaultKernelRules = []KernelRule{
	{CatCommunication, `nccl|all_?reduce|allgather|all_gather|reduce_?scatter|cross_device_reduce|custom_?ar|one_?shot|two_?shot|all_?to_?all|deep_?ep|sendrecv|pplx|multimem`},
	{CatMoE, `moe|expert|topk_?softmax|topk_?gating|grouped_?gemm|grouped_?mm|router|count_and_sort|align_block_size`},
	{CatAttention, `attn|attention|flash|fmha|\bmha|paged|mla|reshape_and_cache|concat_and_cache|rotary|rope|flashinfer|xformers|batch_?prefill|batch_?decode|merge_?states`},
	{CatFFN, `gemm|gemv|matmul|nvjet|cutlass|cublas|xmma|wgmma|sm\d+_|ampere_|hopper_|act_and_mul|silu|gelu|swiglu|mlp|ffn|marlin|machete|scaled_mm|w8a8|fp8_?gemm`},
}

// KernelRule maps names matching Pattern to Category.
type KernelRule struct {
	Category string
	Pattern  string
}

// Classifier assigns a category to each kernel name, caching results.
type Classifier struct {
	rules []compiledRule
	mu    sync.Mutex
	cache map[string]kernelClass
}

type compiledRule struct {
	cat string
	re  *regexp.Regexp
}

type kernelClass struct {
	short, full, cat string
}

// NewClassifier compiles user rules (tried first) followed by DefaultKernelRules.
func NewClassifier(user []KernelRule) (*Classifier, error) {
	c := &Classifier{cache: map[string]kernelClass{}}
	for _, r := range append(append([]KernelRule{}, user...), DefaultKernelRules...) {
		re, err := regexp.Compile("(?i)" + r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("kernel rule %q: %w", r.Pattern, err)
		}
		c.rules = append(c.rules, compiledRule{r.Category, re})
	}
	return c, nil
}

// LoadKernelRules reads a rules file: one rule per line, "CATEGORY REGEXP" (the first
// whitespace separates them); blank lines and lines starting with # are ignored. Any
// category name is allowed; the usual ones are attention, ffn, moe, communication, other.
func LoadKernelRules(path string) ([]KernelRule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rules []KernelRule
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cat, pat, ok := strings.Cut(line, " ")
		if !ok {
			cat, pat, ok = strings.Cut(line, "\t")
		}
		pat = strings.TrimSpace(pat)
		if !ok || pat == "" {
			return nil, fmt.Errorf("%s:%d: want \"CATEGORY REGEXP\"", path, n)
		}
		if _, err := regexp.Compile(pat); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		rules = append(rules, KernelRule{cat, pat})
	}
	return rules, sc.Err()
}

func (c *Classifier) class(raw string) kernelClass {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.cache[raw]; ok {
		return k
	}
	short, full := cupti.Demangle(raw)
	k := kernelClass{short: short, full: full, cat: CatOther}
	for _, r := range c.rules {
		if r.re.MatchString(short) || r.re.MatchString(raw) {
			k.cat = r.cat
			break
		}
	}
	c.cache[raw] = k
	return k
}

// Category returns the category of a raw kernel name.
func (c *Classifier) Category(raw string) string { return c.class(raw).cat }

func (g *gpuItem) category(c *Classifier) string {
	switch g.kind {
	case kindKernel:
		if g.cat != "" {
			return g.cat
		}
		return c.class(g.name).cat
	case kindGraph:
		return CatGraph
	case kindMemcpy:
		return CatMemcpy
	default:
		return CatMemset
	}
}

// KernelRulesEnv names a rules file used when the session has none set.
const KernelRulesEnv = "PROFILEMATE_KERNEL_CLASSES"

// SetKernelRules makes the session classify kernels with these rules before the defaults.
func (s *Session) SetKernelRules(rules []KernelRule) error {
	c, err := NewClassifier(rules)
	if err != nil {
		return err
	}
	s.classes = c
	s.joined = nil
	return nil
}

func (s *Session) classifier() *Classifier {
	if s.classes != nil {
		return s.classes
	}
	var rules []KernelRule
	if p := os.Getenv(KernelRulesEnv); p != "" {
		r, err := LoadKernelRules(p)
		if err != nil {
			s.Warnings = append(s.Warnings, "kernel rules from "+KernelRulesEnv+" ignored: "+err.Error())
		} else {
			rules = r
		}
	}
	c, err := NewClassifier(rules)
	if err != nil {
		c, _ = NewClassifier(nil)
	}
	s.classes = c
	return c
}

func unknownKernel(id uint32) string { return "<unknown kernel " + strconv.Itoa(int(id)) + ">" }
