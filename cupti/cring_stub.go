//go:build !(linux && cgo)

package cupti

// cRing is unavailable without cgo; tests that need it skip.
type cRing struct{}

func newCRing(size uint64) (*cRing, error)                                 { return nil, ErrNotAvailable }
func (c *cRing) fd() int                                                   { return -1 }
func (c *cRing) write(typ uint16, fixed int, tail []byte, seq uint64) bool { return false }
func (c *cRing) setState(s uint32)                                         {}
func (c *cRing) close()                                                    {}

const haveCgo = false
