package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/slack/slacktest"
)

const (
	secret   = "integration-secret"
	payloads = "../../../shared/github-payloads"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds ciwebhook once, the way a release is built: static, no cgo.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ciwebhook-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ciwebhook")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type server struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

// start runs the binary and waits until it listens.
func start(t *testing.T, env ...string) *server {
	t.Helper()
	return startBinary(t, binary(t), env...)
}

// startBinary runs the binary at bin and waits until it listens; env comes
// after the defaults, so it overrides them.
func startBinary(t *testing.T, bin string, env ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "ADDR=127.0.0.1:0", "GITHUB_WEBHOOK_SECRET=" + secret}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, logs: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			s.mu.Unlock()
			var m struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				addr <- m.Addr
			}
		}
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("server log:\n%s", s.log())
		}
	})
	select {
	case a := <-addr:
		s.url = "http://" + a
	case err := <-s.done:
		t.Fatalf("server exited before listening: %v\n%s", err, s.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not listen within 20s\n%s", s.log())
	}
	return s
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

func (s *server) send(t *testing.T, event, guid string, body []byte) (int, map[string]any) {
	t.Helper()
	code, answer, err := s.try(guid, event, body)
	if err != nil {
		t.Fatalf("POST %s: %v", guid, err)
	}
	return code, answer
}

func (s *server) health(t *testing.T) map[string]any {
	t.Helper()
	resp, err := http.Get(s.url + "/webhooks/github/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return m
}

func prOpened(t *testing.T, number int) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(payloads, "pull_request/opened.payload.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	m["pull_request"].(map[string]any)["title"] = fmt.Sprintf("change %d", number)
	m["number"] = number
	out, _ := json.Marshal(m)
	return out
}

// Deliveries answered 2xx survive kill -9 on both embedded backends: still
// duplicates after the restart, and every owed message reaches Slack exactly
// once when it is back.
func TestKillNineLosesNothing(t *testing.T) {
	for _, backend := range []string{"sqlite", "file"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			fake := slacktest.New(t)
			fake.Script(func(int) slacktest.Reply { return slacktest.Reply{Status: 503, Body: "down"} })
			env := []string{"LEDGER_BACKEND=" + backend, "LEDGER_PATH=" + filepath.Join(t.TempDir(), "ledger"),
				"SLACK_WEBHOOK_URL=" + fake.URL(), "SLACK_RETRY_BASE=100ms", "SLACK_MAX_ATTEMPTS=100", "SLACK_RATE=100"}

			s := start(t, env...)
			const n = 10
			for i := range n {
				if code, a := s.send(t, "pull_request", fmt.Sprint("pr-", i), prOpened(t, i)); code != 202 || a["status"] != "queued" {
					t.Fatalf("delivery %d: %d %v", i, code, a)
				}
			}
			if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-s.done
			if len(fake.Accepted()) != 0 {
				t.Fatal("Slack was down, yet accepted a post")
			}

			fake.Script(func(int) slacktest.Reply { return slacktest.Reply{Status: 200, Body: "ok"} })
			s = start(t, env...)
			for i := range n {
				if code, a := s.send(t, "pull_request", fmt.Sprint("pr-", i), prOpened(t, i)); code != 200 || a["status"] != "duplicate" {
					t.Fatalf("after kill -9, delivery %d: %d %v; want 200 duplicate", i, code, a)
				}
			}
			deadline := time.Now().Add(15 * time.Second)
			for len(fake.Accepted()) < n && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // room for a double post to show up
			seen := map[string]int{}
			for _, p := range fake.Accepted() {
				seen[p.Text]++
			}
			for i := range n {
				key := ""
				for text := range seen {
					if strings.Contains(text, fmt.Sprintf("change %d ", i)) || strings.HasSuffix(text, fmt.Sprintf("change %d", i)) {
						key = text
					}
				}
				if seen[key] != 1 {
					t.Errorf("PR %d reached Slack %d times, want exactly once (posts: %v)", i, seen[key], seen)
				}
			}
			if h := s.health(t); h["pending"] != 0.0 || h["ledger_size"] != float64(n) || h["ledger_backend"] != backend {
				t.Errorf("health after recovery: %v", h)
			}
		})
	}
}

// SIGTERM finishes requests in flight, then exits 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := start(t, "LEDGER_PATH="+filepath.Join(t.TempDir(), "l.db"))
	if code, _ := s.send(t, "pull_request", "g1", prOpened(t, 1)); code != 202 {
		t.Fatalf("delivery: %d", code)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, s.log())
		}
	case <-time.After(25 * time.Second):
		t.Fatal("no exit within 25s of SIGTERM")
	}
	if !strings.Contains(s.log(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log:\n%s", s.log())
	}
}

func TestStartupRefusesBadSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ env, want string }{
		{"GITHUB_WEBHOOK_SECRET=", "GITHUB_WEBHOOK_SECRET: is required"},
		{"LEDGER_LIMIT=-3", "LEDGER_LIMIT: "},
		{"LEDGER_BACKEND=mongo", "LEDGER_BACKEND: "},
	} {
		cmd := exec.Command(binary(t), "serve")
		cmd.Env = []string{"ADDR=127.0.0.1:0", "GITHUB_WEBHOOK_SECRET=x", tc.env}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("%s: exit %v, output %q; want a failure with one line containing %q", tc.env, err, out, tc.want)
		}
	}
}

func TestDisabledServesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, "ENABLE_WEBHOOKS=false", "GITHUB_WEBHOOK_SECRET=", "LEDGER_PATH="+filepath.Join(dir, "l.db"))
	if code, _ := s.send(t, "pull_request", "d1", prOpened(t, 1)); code != 404 {
		t.Errorf("disabled: %d, want 404", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "l.db")); !os.IsNotExist(err) {
		t.Errorf("disabled service created a ledger: %v", err)
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	run := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := run(context.Background(), args, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, _ := run("version"); code != 0 || !strings.HasPrefix(out, "ciwebhook ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errOut := run("frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
	if code, _, errOut := run("preview", "--nope"); code != 2 || !strings.Contains(errOut, "nope") {
		t.Errorf("unknown flag: %d %q", code, errOut)
	}
	for _, cmd := range []string{"serve", "preview", "version"} {
		if code, _, errOut := run(cmd, "--help"); code != 0 || !strings.Contains(errOut, "Usage: ciwebhook "+cmd) {
			t.Errorf("%s --help: %d %q", cmd, code, errOut)
		}
	}
	file := filepath.Join(payloads, "workflow_run/completed.payload.json")
	code, out, errOut := run("preview", "--event", "workflow_run", "--file", file)
	if code != 0 || !strings.Contains(out, `"blocks"`) || !strings.Contains(out, "octo-org/octo-repo") {
		t.Errorf("preview workflow_run: %d %q %q", code, out, errOut)
	}
	code, out, _ = run("preview", "--event", "pull_request", "--file", filepath.Join(payloads, "pull_request/labeled.payload.json"))
	if code != 0 || !strings.HasPrefix(out, "no message: ignored") {
		t.Errorf("preview labeled PR: %d %q", code, out)
	}
	code, _, errOut = run("preview", "--event", "workflow_run", "--file", filepath.Join(t.TempDir(), "missing.json"))
	if code != 1 || !strings.Contains(errOut, "missing.json") {
		t.Errorf("preview of a missing file: %d %q", code, errOut)
	}
}

// The Dockerfile's binary, built the Dockerfile's way, is static (it runs on
// distroless/static, which has no libc and no dynamic loader), stripped,
// and starts and answers health, on ADDR and on PORT.
func TestStaticBinary(t *testing.T) {
	t.Parallel()
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	const build = `RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ciwebhook ./cmd/ciwebhook`
	if !strings.Contains(string(dockerfile), build) {
		t.Fatalf("the Dockerfile no longer builds with\n\t%s\nupdate this test to build the way it does", build)
	}
	bin := filepath.Join(t.TempDir(), "ciwebhook")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("the binary is not ELF: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a PT_INTERP header: it needs a dynamic loader")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("DT_NEEDED entries %v (%v): the binary needs shared libraries", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: -ldflags=-s did not apply")
	}

	t.Run("ADDR", func(t *testing.T) {
		t.Parallel()
		s := startBinary(t, bin, "LEDGER_PATH="+filepath.Join(t.TempDir(), "ledger.db"))
		if h := s.health(t); h["status"] != "ok" || h["ledger_backend"] != "sqlite" {
			t.Errorf("health: %v", h)
		}
	})
	t.Run("PORT", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		s := startBinary(t, bin, "ADDR=", "PORT="+port, "LEDGER_PATH="+filepath.Join(t.TempDir(), "ledger.db"))
		if !strings.HasSuffix(s.url, ":"+port) {
			t.Fatalf("listening on %s, want port %s", s.url, port)
		}
		resp, err := http.Get("http://127.0.0.1:" + port + "/webhooks/github/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("health on PORT %s: %d", port, resp.StatusCode)
		}
	})
}
