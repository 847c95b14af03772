package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ciwebhook/ciwebhook"
)

// envMap is a getenv over a fixed set of variables.
func envMap(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// service runs the real service (ciwebhook.New) behind an httptest server,
// with its worker, and returns its address (host:port).
func service(t *testing.T, kv ...string) (addr string, svc *ciwebhook.Service) {
	t.Helper()
	svc, err := ciwebhook.New(t.Context(), ciwebhook.Options{
		Getenv: envMap(kv...),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/github", svc)
	mux.Handle("/webhooks/github/", svc)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		svc.Close()
	})
	return srv.Listener.Addr().String(), svc
}

// runCmd runs one subcommand with getenv as its environment.
func runCmd(cmd func(context.Context, []string, func(string) string, io.Writer, io.Writer) int, env func(string) string, args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := cmd(context.Background(), args, env, &out, &errb)
	return code, out.String(), errb.String()
}

var guidShape = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestSend(t *testing.T) {
	t.Parallel()
	addr, _ := service(t, "GITHUB_WEBHOOK_SECRET", secret, "LEDGER_PATH", filepath.Join(t.TempDir(), "l.db"))
	url := "http://" + addr + "/webhooks/github"
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(payloads, "workflow_run/completed.payload.json")
	ping := filepath.Join(payloads, "ping/payload.json")

	cases := []struct {
		name     string
		env      []string
		args     []string
		code     int
		stdout   []string // each must appear
		stderr   []string
		randGUID bool // the answer names a new random GUID
	}{
		{"default URL from ADDR, random GUID", []string{"GITHUB_WEBHOOK_SECRET", secret, "ADDR", addr},
			[]string{"--event", "workflow_run", "--file", run}, 0, []string{"202 Accepted", `"status":"queued"`}, nil, true},
		{"explicit URL and GUID", []string{"GITHUB_WEBHOOK_SECRET", secret},
			[]string{"--event", "workflow_run", "--file", run, "--url", url, "--delivery", "send-dup"}, 0,
			[]string{"202 Accepted", `"delivery":"send-dup"`}, []string{"delivery send-dup"}, false},
		{"the same GUID again is a duplicate", []string{"GITHUB_WEBHOOK_SECRET", secret},
			[]string{"--event", "workflow_run", "--file", run, "--url", url, "--delivery", "send-dup"}, 0,
			[]string{"200 OK", `"status":"duplicate"`}, nil, false},
		{"secret from a file, server switch ignored", []string{"GITHUB_WEBHOOK_SECRET_FILE", secretFile, "ENABLE_WEBHOOKS", "false"},
			[]string{"--event", "ping", "--file", ping, "--url", url}, 0, []string{"200 OK", `"status":"pong"`}, nil, true},
		{"wrong secret: 401, exit 1", []string{"GITHUB_WEBHOOK_SECRET", "not-" + secret},
			[]string{"--event", "workflow_run", "--file", run, "--url", url}, 1, []string{"401 Unauthorized", "signature does not match"}, nil, false},
		{"server refuses the payload: 400, exit 1", []string{"GITHUB_WEBHOOK_SECRET", secret},
			[]string{"--event", "workflow_run", "--file", "../../go.mod", "--url", url}, 1, []string{"400 Bad Request"}, nil, false},
		{"no secret", nil,
			[]string{"--event", "workflow_run", "--file", run, "--url", url}, 1, nil, []string{"GITHUB_WEBHOOK_SECRET: is required"}, false},
		{"missing file", []string{"GITHUB_WEBHOOK_SECRET", secret},
			[]string{"--event", "workflow_run", "--file", "nope.json", "--url", url}, 1, nil, []string{"nope.json"}, false},
		{"missing --event", []string{"GITHUB_WEBHOOK_SECRET", secret}, []string{"--file", run}, 2, nil, []string{"--event and --file are required"}, false},
		{"bad --url", []string{"GITHUB_WEBHOOK_SECRET", secret}, []string{"--event", "ping", "--file", run, "--url", "localhost:8080"}, 2, nil, []string{"not an http(s) URL"}, false},
		{"unknown flag", []string{"GITHUB_WEBHOOK_SECRET", secret}, []string{"--nope"}, 2, nil, []string{"nope"}, false},
		{"help", nil, []string{"--help"}, 0, nil, []string{"Usage: ciwebhook send"}, false},
	}
	// Sequential: the duplicate case depends on the one before it.
	for _, tc := range cases {
		code, out, errOut := runCmd(send, envMap(tc.env...), tc.args...)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\nstdout %q\nstderr %q", tc.name, code, tc.code, out, errOut)
		}
		for _, w := range tc.stdout {
			if !strings.Contains(out, w) {
				t.Errorf("%s: stdout %q lacks %q", tc.name, out, w)
			}
		}
		for _, w := range tc.stderr {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr %q lacks %q", tc.name, errOut, w)
			}
		}
		if strings.Contains(out+errOut, secret) || strings.Contains(out+errOut, "sha256=") {
			t.Errorf("%s: the secret or the signature was printed:\n%s%s", tc.name, out, errOut)
		}
		if tc.randGUID {
			var a struct{ Delivery string }
			lines := strings.Split(strings.TrimSpace(out), "\n")
			json.Unmarshal([]byte(lines[len(lines)-1]), &a)
			if !guidShape.MatchString(a.Delivery) {
				t.Errorf("%s: delivery %q is not a random UUID", tc.name, a.Delivery)
			}
		}
	}
}

func TestSendServerDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	file := filepath.Join(payloads, "workflow_run/completed.payload.json")
	code, out, errOut := runCmd(send, envMap("GITHUB_WEBHOOK_SECRET", secret, "ADDR", addr), "--event", "workflow_run", "--file", file)
	if code != 1 || out != "" || !strings.Contains(errOut, "cannot reach http://"+addr+"/webhooks/github") ||
		!strings.Contains(errOut, "is the server running?") {
		t.Errorf("server down: exit %d, stdout %q, stderr %q; want exit 1 and a clear message", code, out, errOut)
	}
	// Credentials in --url are not shown back.
	code, _, errOut = runCmd(send, envMap("GITHUB_WEBHOOK_SECRET", secret), "--event", "workflow_run", "--file", file,
		"--url", "http://user:hunter2@"+addr+"/webhooks/github")
	if code != 1 || strings.Contains(errOut, "hunter2") {
		t.Errorf("URL with a password: exit %d, stderr %q; want exit 1 without the password", code, errOut)
	}
}

// The allowlist reaches the handler through ciwebhook.New: a refused source
// is answered 403, and send says so with exit 1.
func TestSendFromRefusedSource(t *testing.T) {
	t.Parallel()
	addr, _ := service(t, "GITHUB_WEBHOOK_SECRET", secret, "LEDGER_PATH", filepath.Join(t.TempDir(), "l.db"),
		"ALLOWED_SOURCE_CIDRS", "192.30.252.0/22, 2606:50c0::/32")
	file := filepath.Join(payloads, "workflow_run/completed.payload.json")
	code, out, errOut := runCmd(send, envMap("GITHUB_WEBHOOK_SECRET", secret, "ADDR", addr), "--event", "workflow_run", "--file", file)
	if code != 1 || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, "127.0.0.1 is not allowed") {
		t.Errorf("refused source: exit %d, stdout %q, stderr %q; want 403 and exit 1", code, out, errOut)
	}
}

func TestDefaultURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, want string }{
		{":8080", "http://localhost:8080/webhooks/github"},
		{"0.0.0.0:9000", "http://localhost:9000/webhooks/github"},
		{"[::]:9000", "http://localhost:9000/webhooks/github"},
		{"127.0.0.1:7000", "http://127.0.0.1:7000/webhooks/github"},
		{"[::1]:7000", "http://[::1]:7000/webhooks/github"},
		{"localhost:7000", "http://localhost:7000/webhooks/github"},
	} {
		if got := defaultURL(tc.addr); got != tc.want {
			t.Errorf("defaultURL(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestNewGUID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		g := newGUID()
		if !guidShape.MatchString(g) || seen[g] {
			t.Fatalf("newGUID() = %q: not a fresh version 4 UUID", g)
		}
		seen[g] = true
	}
}
