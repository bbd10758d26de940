package daemon

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// maxBody bounds a request body; a capture request is a few hundred bytes.
const maxBody = 64 << 10

// CaptureRequest is the JSON body of POST /captures.
type CaptureRequest struct {
	Pid         int             `json:"pid,omitempty"`
	Selector    *Selector       `json:"selector,omitempty"`
	All         bool            `json:"all,omitempty"`
	Duration    json.RawMessage `json:"duration,omitempty"` // "60s" or a number of seconds
	Detail      string          `json:"detail,omitempty"`
	SampleEvery uint32          `json:"sample_every,omitempty"`
	Label       string          `json:"label,omitempty"`
}

// CaptureResponse is the body of a successful POST /captures.
type CaptureResponse struct {
	Captures []Capture `json:"captures"`
}

type servers struct {
	list []*http.Server
	lns  []net.Listener
	errc chan error
	sock string
}

// Handler returns the API handler (exported for tests and embedding).
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /captures", d.handleStart)
	mux.HandleFunc("GET /captures", d.handleList)
	mux.HandleFunc("GET /captures/{id}", d.handleGet)
	mux.HandleFunc("GET /captures/{id}/bundle", d.handleBundle)
	mux.HandleFunc("POST /captures/{id}/stop", d.handleStop)
	mux.HandleFunc("DELETE /captures/{id}", d.handleDelete)
	mux.HandleFunc("GET /processes", d.handleProcesses)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("GET /metrics", d.metricsHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/captures" || strings.HasPrefix(p, "/captures/") || p == "/processes" || p == "/metrics" || p == "/healthz":
			writeErr(w, apiErr(405, "%s is not allowed on %s", r.Method, p))
			return
		}
		writeErr(w, apiErr(404, "no such endpoint %s %s; the API is POST /captures, GET /captures, GET /captures/{id}, GET /captures/{id}/bundle, POST /captures/{id}/stop, DELETE /captures/{id}, GET /processes, GET /metrics, GET /healthz", r.Method, r.URL.Path))
	})
	var h http.Handler = mux
	if d.cfg.Token != "" {
		h = d.auth(h)
	}
	return d.count(h)
}

func (d *Daemon) metricsHandler() http.Handler {
	return promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{})
}

// auth requires "Authorization: Bearer <token>" on every endpoint but /healthz.
func (d *Daemon) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + d.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="profilemate-trace"`)
			writeErr(w, apiErr(401, "missing or wrong token: send \"Authorization: Bearer <token>\" (profilemate-trace capture --token-file …)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(c int) { s.code = c; s.ResponseWriter.WriteHeader(c) }

func (d *Daemon) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: 200}
		next.ServeHTTP(sw, r)
		d.m.requests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = &APIError{500, err.Error()}
	}
	if ae.Status == 429 || ae.Status == 503 {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, ae.Status, map[string]string{"error": ae.Msg})
}

// decodeRequest parses and checks a POST /captures body.
func (d *Daemon) decodeRequest(r *http.Request) (Request, error) {
	var req Request
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return req, apiErr(415, "Content-Type must be application/json, not %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return req, apiErr(400, "reading the request: %v", err)
	}
	if len(body) > maxBody {
		return req, apiErr(413, "request body over %d bytes", maxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var cr CaptureRequest
	if err := dec.Decode(&cr); err != nil {
		return req, apiErr(400, "malformed JSON: %v; expected e.g. {\"pid\": 1234, \"duration\": \"60s\", \"detail\": \"graph\"}", err)
	}
	if dec.More() {
		return req, apiErr(400, "malformed JSON: more than one object in the body")
	}
	n := 0
	if cr.Pid != 0 {
		n++
	}
	if cr.Selector != nil {
		n++
	}
	if cr.All {
		n++
	}
	if n != 1 {
		return req, apiErr(400, "give exactly one of \"pid\", \"selector\" or \"all\": true")
	}
	if cr.Pid < 0 || cr.Pid > 1<<22 {
		return req, apiErr(400, "pid %d is out of range", cr.Pid)
	}
	if cr.Selector != nil {
		if cr.Selector.empty() {
			return req, apiErr(400, "an empty selector matches everything; use \"all\": true to capture every vLLM process tree")
		}
		req.Selector = *cr.Selector
	}
	req.Pid, req.All = cr.Pid, cr.All
	if len(cr.Duration) > 0 {
		req.Duration, err = parseDuration(cr.Duration)
		if err != nil {
			return req, apiErr(400, "duration: %v", err)
		}
	}
	req.Detail = ring.DetailGraph
	if cr.Detail != "" {
		req.Detail, err = ring.ParseDetail(cr.Detail)
		if err != nil {
			return req, apiErr(400, "detail: %v", err)
		}
	}
	req.SampleEvery = cr.SampleEvery
	if len(cr.Label) > 128 {
		return req, apiErr(400, "label longer than 128 bytes")
	}
	for _, c := range cr.Label {
		if !unicode.IsPrint(c) {
			return req, apiErr(400, "label must be printable text")
		}
	}
	req.Label = cr.Label
	return req, nil
}

// parseDuration accepts "90s"/"2m" or a number of seconds.
func parseDuration(raw json.RawMessage) (time.Duration, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. \"60s\", \"5m\")", s)
		}
		if d <= 0 {
			return 0, fmt.Errorf("%s must be positive", s)
		}
		return d, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, fmt.Errorf("%s is neither a duration string nor a number of seconds", string(raw))
	}
	if f <= 0 || f > 1e6 {
		return 0, fmt.Errorf("%v seconds is out of range", f)
	}
	return time.Duration(f * float64(time.Second)), nil
}

func (d *Daemon) handleStart(w http.ResponseWriter, r *http.Request) {
	req, err := d.decodeRequest(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	caps, err := d.Start(req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, 202, CaptureResponse{Captures: caps})
}

func (d *Daemon) handleList(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"captures": d.store.list()})
}

func (d *Daemon) captureID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !ValidID(id) {
		writeErr(w, apiErr(400, "invalid capture id %q (ids look like c20261127t101500-1a2b3c4d)", id))
		return "", false
	}
	return id, true
}

func (d *Daemon) handleGet(w http.ResponseWriter, r *http.Request) {
	id, ok := d.captureID(w, r)
	if !ok {
		return
	}
	c, ok := d.store.get(id)
	if !ok {
		writeErr(w, apiErr(404, "no capture %s (removed by retention, or never existed)", id))
		return
	}
	writeJSON(w, 200, c)
}

func (d *Daemon) handleBundle(w http.ResponseWriter, r *http.Request) {
	id, ok := d.captureID(w, r)
	if !ok {
		return
	}
	f, c, err := d.store.openBundle(id)
	switch {
	case errors.Is(err, fs.ErrNotExist) && c.ID == "":
		writeErr(w, apiErr(404, "no capture %s", id))
		return
	case errors.Is(err, errNoBundle) && c.State == StateRunning:
		writeErr(w, apiErr(409, "capture %s is still running; its bundle is written when it ends", id))
		return
	case err != nil:
		writeErr(w, apiErr(404, "capture %s (%s) has no bundle: %v %s", id, c.State, err, c.Error))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", c.Bundle))
	http.ServeContent(w, r, c.Bundle, st.ModTime(), f)
}

func (d *Daemon) handleStop(w http.ResponseWriter, r *http.Request) {
	id, ok := d.captureID(w, r)
	if !ok {
		return
	}
	if err := d.Stop(id); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, 202, map[string]string{"stopping": id})
}

func (d *Daemon) handleDelete(w http.ResponseWriter, r *http.Request) {
	id, ok := d.captureID(w, r)
	if !ok {
		return
	}
	if err := d.Delete(id); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, 200, map[string]string{"deleted": id})
}

func (d *Daemon) handleProcesses(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"processes": d.Processes()})
}

// listen opens the API listener (and the metrics-only one) and starts serving.
func (d *Daemon) listen() (*servers, error) {
	s := &servers{errc: make(chan error, 2)}
	ln, sock, err := listenOn(d.cfg.Listen)
	if err != nil {
		return nil, err
	}
	s.sock = sock
	s.add(ln, d.Handler())
	if d.cfg.MetricsListen != "" {
		mln, _, err := listenOn(d.cfg.MetricsListen)
		if err != nil {
			s.close(0)
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", d.metricsHandler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
		s.add(mln, mux)
	}
	return s, nil
}

func (s *servers) add(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
		MaxHeaderBytes: 16 << 10}
	s.list = append(s.list, srv)
	s.lns = append(s.lns, ln)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
}

func (s *servers) close(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, srv := range s.list {
		srv.Shutdown(ctx)
	}
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.sock != "" {
		os.Remove(s.sock)
	}
}

// listenOn opens "unix:/path" (parent directory 0700, socket 0600, a stale socket
// replaced) or a TCP address.
func listenOn(addr string) (net.Listener, string, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, "", fmt.Errorf("socket directory: %w", err)
		}
		if st, err := os.Lstat(p); err == nil {
			if st.Mode()&os.ModeSocket == 0 {
				return nil, "", fmt.Errorf("%s exists and is not a socket", p)
			}
			if c, err := net.Dial("unix", p); err == nil {
				c.Close()
				return nil, "", fmt.Errorf("another daemon is listening on %s", p)
			}
			os.Remove(p)
		}
		// Only root may connect: the socket is made 0600 right after bind (its directory is
		// created 0700 when missing).
		ln, err := net.Listen("unix", p)
		if err != nil {
			return nil, "", err
		}
		if err := os.Chmod(p, 0o600); err != nil {
			ln.Close()
			return nil, "", err
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		return ln, p, nil
	}
	ln, err := net.Listen("tcp", addr)
	return ln, "", err
}
