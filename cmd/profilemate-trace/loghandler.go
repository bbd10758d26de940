package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// cliHandler writes library log records in the CLI's own voice, one line each:
//
//	profilemate-trace: warning: code scan incomplete (pid=2165 error="code scan stopped after …")
//
// so that a warning from the eBPF tracer reads like every other message of the command.
type cliHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Leveler
	attrs []slog.Attr
	group string
}

func newCLIHandler(w io.Writer, level slog.Leveler) *cliHandler {
	return &cliHandler{mu: new(sync.Mutex), w: w, level: level}
}

func (h *cliHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *cliHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("profilemate-trace: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	var kv []string
	add := func(a slog.Attr, group string) {
		if a.Equal(slog.Attr{}) {
			return
		}
		k := a.Key
		if group != "" {
			k = group + "." + k
		}
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " \t\"=") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		kv = append(kv, k+"="+v)
	}
	for _, a := range h.attrs { // qualified when they were added
		add(a, "")
	}
	r.Attrs(func(a slog.Attr) bool { add(a, h.group); return true })
	if len(kv) > 0 {
		b.WriteString(" (" + strings.Join(kv, " ") + ")")
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *cliHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.group != "" {
			a.Key = h.group + "." + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *cliHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
