package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Client talks to a daemon's API (the `capture` and `captures` commands).
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient connects to addr ("unix:/path", "host:port" or "http://host:port").
func NewClient(addr, token string) *Client {
	c := &Client{token: token, hc: &http.Client{Timeout: 5 * time.Minute}}
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.base = "http://daemon"
		c.hc.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p)
		}}
	} else if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		c.base = strings.TrimRight(addr, "/")
	} else {
		c.base = "http://" + addr
	}
	return c
}

func (c *Client) do(method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the daemon: %w", err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e struct{ Error string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: e.Error}
	}
	return resp, nil
}

func (c *Client) getJSON(path string, v any) error {
	resp, err := c.do("GET", path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Start asks for captures.
func (c *Client) Start(req CaptureRequest) ([]Capture, error) {
	resp, err := c.do("POST", "/captures", req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out CaptureResponse
	return out.Captures, json.NewDecoder(resp.Body).Decode(&out)
}

// List returns the capture index, newest first.
func (c *Client) List() ([]Capture, error) {
	var out struct{ Captures []Capture }
	return out.Captures, c.getJSON("/captures", &out)
}

// Get returns one capture.
func (c *Client) Get(id string) (Capture, error) {
	var out Capture
	return out, c.getJSON("/captures/"+id, &out)
}

// Processes returns the vLLM processes the daemon sees.
func (c *Client) Processes() ([]Process, error) {
	var out struct{ Processes []Process }
	return out.Processes, c.getJSON("/processes", &out)
}

// Wait polls a capture until it is no longer running.
func (c *Client) Wait(ctx context.Context, id string) (Capture, error) {
	for {
		cp, err := c.Get(id)
		if err != nil || cp.State != StateRunning {
			return cp, err
		}
		select {
		case <-ctx.Done():
			return cp, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Download writes a capture's bundle to path (created 0600, never overwriting).
func (c *Client) Download(id, path string) (int64, error) {
	resp, err := c.do("GET", "/captures/"+id+"/bundle", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return n, err
}

// Stop ends a running capture now.
func (c *Client) Stop(id string) error {
	resp, err := c.do("POST", "/captures/"+id+"/stop", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Delete removes a finished capture.
func (c *Client) Delete(id string) error {
	resp, err := c.do("DELETE", "/captures/"+id, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}
