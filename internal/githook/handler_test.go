package githook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/notify"
)

const (
	testSecret = "s3cret-for-tests"
	payloads   = "../../../shared/github-payloads"
)

type fixture struct {
	h       *Handler
	store   *sqlite.Store
	metrics *metrics.Metrics
	woken   int
	mu      sync.Mutex
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{store: st, metrics: metrics.New(prometheus.NewRegistry())}
	if opts.Secrets == nil {
		opts.Secrets = [][]byte{[]byte(testSecret)}
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 2 << 20
	}
	opts.Backend, opts.SlackMode = "sqlite", "log-only"
	opts.Wake = func() { f.mu.Lock(); f.woken++; f.mu.Unlock() }
	f.h = New(opts, st, f.metrics, slog.New(slog.DiscardHandler))
	return f
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func readPayload(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(payloads, rel))
	if err != nil {
		t.Fatalf("reading the shared payloads: %v", err)
	}
	return b
}

// delivery builds a signed request as GitHub sends it.
func delivery(event, guid string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(string(body)))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", guid)
	r.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
	return r
}

func (f *fixture) do(r *http.Request) (int, answer) {
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var a answer
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		panic(fmt.Sprintf("%s %s: Content-Type %q", r.Method, r.URL, ct))
	}
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		panic(fmt.Sprintf("%s %s: body %q is not JSON: %v", r.Method, r.URL, w.Body.String(), err))
	}
	return w.Code, a
}

func (f *fixture) size(t *testing.T) int {
	t.Helper()
	st, err := f.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Size
}

// GitHub's documented test vector, and the same payload one byte longer.
func TestVerifyGitHubVector(t *testing.T) {
	t.Parallel()
	secrets := [][]byte{[]byte("It's a Secret to Everybody")}
	const header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if i, err := verify(secrets, []byte("Hello, World!"), header); err != nil || i != 0 {
		t.Fatalf("GitHub's vector: got (%d, %v), want (0, nil)", i, err)
	}
	if _, err := verify(secrets, []byte("Hello, World!\n"), header); !errors.Is(err, errMismatch) {
		t.Fatalf("payload with a trailing newline: got %v, want a mismatch", err)
	}
	// The previous secret verifies too, and says it is the second.
	rotated := [][]byte{[]byte("new secret"), secrets[0]}
	if i, err := verify(rotated, []byte("Hello, World!"), header); err != nil || i != 1 {
		t.Fatalf("previous secret: got (%d, %v), want (1, nil)", i, err)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	body := readPayload(t, "workflow_run/completed.payload.json")
	form := []byte("payload=" + url.QueryEscape(string(body)))
	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		reason string
	}{
		{"GET on the webhook route", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, Path, nil)
		}, 405, metrics.ReasonMethod},
		{"body over the limit, with Content-Length", func() *http.Request {
			return delivery("workflow_run", "g1", append(body, make([]byte, 64<<10)...))
		}, 413, metrics.ReasonTooLarge},
		{"body over the limit, chunked", func() *http.Request {
			r := delivery("workflow_run", "g1", append(body, make([]byte, 64<<10)...))
			r.ContentLength = -1
			return r
		}, 413, metrics.ReasonTooLarge},
		{"no signature", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Del("X-Hub-Signature-256")
			return r
		}, 401, metrics.ReasonSignature},
		{"SHA-1 signature only", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Del("X-Hub-Signature-256")
			r.Header.Set("X-Hub-Signature", "sha1=0123456789012345678901234567890123456789")
			return r
		}, 401, metrics.ReasonSignature},
		{"signature without prefix", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Set("X-Hub-Signature-256", strings.TrimPrefix(sign(testSecret, body), "sha256="))
			return r
		}, 401, metrics.ReasonSignature},
		{"signature not hex", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("zz", 32))
			return r
		}, 401, metrics.ReasonSignature},
		{"signature too short", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Set("X-Hub-Signature-256", sign(testSecret, body)[:70])
			return r
		}, 401, metrics.ReasonSignature},
		{"signed with another secret", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Set("X-Hub-Signature-256", sign("wrong", body))
			return r
		}, 401, metrics.ReasonSignature},
		{"body changed after signing", func() *http.Request {
			r := delivery("workflow_run", "g1", append(body[:len(body):len(body)], ' '))
			r.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
			return r
		}, 401, metrics.ReasonSignature},
		{"no event header", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Del("X-GitHub-Event")
			return r
		}, 400, metrics.ReasonHeaders},
		{"no delivery header", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Del("X-GitHub-Delivery")
			return r
		}, 400, metrics.ReasonHeaders},
		{"delivery header with control characters", func() *http.Request {
			return delivery("workflow_run", "g1\x1b[31m", body)
		}, 400, metrics.ReasonHeaders},
		{"text/plain", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Set("Content-Type", "text/plain")
			return r
		}, 415, metrics.ReasonMediaType},
		{"no content type", func() *http.Request {
			r := delivery("workflow_run", "g1", body)
			r.Header.Del("Content-Type")
			return r
		}, 415, metrics.ReasonMediaType},
		{"form without payload field", func() *http.Request {
			b := []byte("other=1")
			r := delivery("workflow_run", "g1", b)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, 400, metrics.ReasonPayload},
		{"form signed over the payload field only", func() *http.Request {
			r := delivery("workflow_run", "g1", form)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
			return r
		}, 401, metrics.ReasonSignature},
		{"JSON array", func() *http.Request { return delivery("workflow_run", "g1", []byte(`[{"action":"completed"}]`)) }, 400, metrics.ReasonPayload},
		{"JSON null", func() *http.Request { return delivery("workflow_run", "g1", []byte(`null`)) }, 400, metrics.ReasonPayload},
		{"not JSON", func() *http.Request { return delivery("workflow_run", "g1", []byte(`{"action":`)) }, 400, metrics.ReasonPayload},
		{"empty body", func() *http.Request { return delivery("workflow_run", "g1", nil) }, 400, metrics.ReasonPayload},
		{"workflow_run of the wrong shape", func() *http.Request {
			return delivery("workflow_run", "g1", []byte(`{"action":"completed","workflow_run":"x"}`))
		}, 400, metrics.ReasonPayload},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Options{MaxBodyBytes: int64(len(form) + 1024)})
			code, a := f.do(tc.req())
			if code != tc.status {
				t.Fatalf("status %d (%+v), want %d", code, a, tc.status)
			}
			if a.Error == "" {
				t.Errorf("answer %+v has no error message", a)
			}
			if strings.Contains(a.Error, testSecret) {
				t.Errorf("answer %q shows the secret", a.Error)
			}
			if n := f.size(t); n != 0 {
				t.Errorf("ledger has %d rows, want 0: bad input must change nothing", n)
			}
			if got := testCounter(t, f.metrics.Failures.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("failures{reason=%q} = %v, want 1", tc.reason, got)
			}
			if f.woken != 0 {
				t.Errorf("worker woken %d times for a refused delivery", f.woken)
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	wr := readPayload(t, "workflow_run/completed.payload.json")
	cases := []struct {
		name, event string
		body        []byte
		opts        Options
		status      int
		answer      string
		state       ledger.State
	}{
		{"ping", "ping", readPayload(t, "ping/payload.json"), Options{}, 200, "pong", ledger.Ignored},
		{"workflow_run completed", "workflow_run", wr, Options{}, 202, "queued", ledger.Pending},
		{"workflow_run requested", "workflow_run", readPayload(t, "workflow_run/requested.payload.json"), Options{}, 202, "ignored", ledger.Ignored},
		{"pull_request labeled", "pull_request", readPayload(t, "pull_request/labeled.payload.json"), Options{}, 202, "ignored", ledger.Ignored},
		{"unknown event", "push", readPayload(t, "push/payload.json"), Options{}, 202, "ignored", ledger.Ignored},
		{"branch filtered", "workflow_run", wr, Options{Filters: notify.Filters{Branches: []string{"main"}}}, 202, "filtered", ledger.Filtered},
		{"branch allowed", "workflow_run", wr, Options{Filters: notify.Filters{Branches: []string{"master"}}}, 202, "queued", ledger.Pending},
		{"repo filtered", "workflow_run", wr, Options{Filters: notify.Filters{Repos: []string{"octo-org/other"}}}, 202, "filtered", ledger.Filtered},
		{"repo owner glob, any case", "workflow_run", wr, Options{Filters: notify.Filters{Repos: []string{"octo-org/*"}}}, 202, "queued", ledger.Pending},
		{"status pending, not asked for", "status", pendingStatus(t), Options{}, 202, "ignored", ledger.Ignored},
		{"status pending, asked for", "status", pendingStatus(t), Options{NotifyPending: true}, 202, "queued", ledger.Pending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.opts)
			code, a := f.do(delivery(tc.event, "guid-1", tc.body))
			if code != tc.status || a.Status != tc.answer || a.Delivery != "guid-1" {
				t.Fatalf("got %d %+v, want %d %q for guid-1", code, a, tc.status, tc.answer)
			}
			row, err := f.store.Get(context.Background(), "guid-1")
			if err != nil {
				t.Fatalf("the delivery was answered %d but is not in the ledger: %v", code, err)
			}
			if row.State != tc.state || row.Event != tc.event {
				t.Errorf("ledger row state %q event %q, want %q %q", row.State, row.Event, tc.state, tc.event)
			}
			// A job row keeps its job for the run's message (Summary.Kept).
			if (tc.state == ledger.Pending || tc.event == "workflow_job") != (len(row.Message) > 0) {
				t.Errorf("row message %q: a message is stored exactly when one is owed", row.Message)
			}
			if (tc.state == ledger.Pending) != (f.woken == 1) {
				t.Errorf("worker woken %d times", f.woken)
			}
			// The same delivery again is a duplicate and changes nothing.
			code, a = f.do(delivery(tc.event, "guid-1", tc.body))
			wantDup := "duplicate"
			if tc.event == "ping" {
				wantDup = "pong"
			}
			if code != 200 || a.Status != wantDup {
				t.Fatalf("second copy: got %d %+v, want 200 %s", code, a, wantDup)
			}
			if n := f.size(t); n != 1 {
				t.Errorf("ledger has %d rows after a duplicate, want 1", n)
			}
		})
	}
}

func pendingStatus(t *testing.T) []byte {
	return rewrite(t, readPayload(t, "status/payload.json"), func(m map[string]any) { m["state"] = "pending" })
}

// rewrite edits a real payload, for cases GitHub's examples lack.
func rewrite(t *testing.T, body []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSeedColumnsRecorded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	f.do(delivery("workflow_run", "w1", readPayload(t, "workflow_run/completed.payload.json")))
	row, err := f.store.Get(context.Background(), "w1")
	if err != nil {
		t.Fatal(err)
	}
	want := ledger.Delivery{Repo: "octo-org/octo-repo", Ref: "master", Workflow: "test", Status: "completed",
		Conclusion: "success", URL: "https://github.com/octo-org/octo-repo/actions/runs/289782451", Action: "completed"}
	if row.Repo != want.Repo || row.Ref != want.Ref || row.Workflow != want.Workflow || row.Status != want.Status ||
		row.Conclusion != want.Conclusion || row.URL != want.URL || row.Action != want.Action {
		t.Errorf("row %+v\nwant seed columns of %+v", row, want)
	}
	if row.ReceivedAt.IsZero() || row.Attempts != 0 || row.Delivered() {
		t.Errorf("row %+v: want a received time, no attempts, not delivered", row)
	}
}

func TestFormEncodedAndPreviousSecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{Secrets: [][]byte{[]byte("new"), []byte(testSecret)}})
	body := []byte("payload=" + url.QueryEscape(string(readPayload(t, "workflow_run/completed.payload.json"))))
	r := delivery("workflow_run", "form-1", body)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if code, a := f.do(r); code != 202 || a.Status != "queued" {
		t.Fatalf("form-encoded delivery signed with the previous secret: got %d %+v, want 202 queued", code, a)
	}
	if got := testCounter(t, f.metrics.SecretMatches.WithLabelValues(metrics.SecretPrevious)); got != 1 {
		t.Errorf("signature_secret{previous} = %v, want 1", got)
	}
}

// Fifty copies of one delivery racing in: exactly one is recorded.
func TestConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	body := readPayload(t, "workflow_run/completed.payload.json")
	const n = 50
	codes := make(chan int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			code, _ := f.do(delivery("workflow_run", "same-guid", body))
			codes <- code
		})
	}
	close(start)
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[202] != 1 || count[200] != n-1 {
		t.Fatalf("answers %v, want one 202 and %d 200", count, n-1)
	}
	if got := testCounter(t, f.metrics.DedupHits); got != n-1 {
		t.Errorf("dedup_hits = %v, want %d", got, n-1)
	}
	if f.size(t) != 1 {
		t.Errorf("ledger size %d, want 1", f.size(t))
	}
}

// Every real payload GitHub sends goes through without a server error.
func TestEveryRealPayload(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	index := readPayload(t, "INDEX.tsv")
	n := 0
	for i, line := range strings.Split(strings.TrimSpace(string(index)), "\n") {
		if i == 0 {
			continue
		}
		cols := strings.Split(line, "\t")
		ev, file := cols[0], cols[2]
		n++
		code, a := f.do(delivery(ev, fmt.Sprintf("real-%d", i), readPayload(t, file)))
		if code != 200 && code != 202 {
			t.Errorf("%s (%s): %d %+v, want 200 or 202", file, ev, code, a)
		}
	}
	if n != 79 {
		t.Errorf("read %d payloads from INDEX.tsv, want 79", n)
	}
	if got := f.size(t); got != n {
		t.Errorf("ledger has %d rows, want %d", got, n)
	}
}

// Said once: a status seen twice, and the check suite of a posted workflow run.
func TestSaidOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	status := readPayload(t, "status/payload.json")
	if _, a := f.do(delivery("status", "s1", status)); a.Status != "queued" {
		t.Fatalf("first status: %+v, want queued", a)
	}
	if _, a := f.do(delivery("status", "s2", status)); a.Status != "ignored" {
		t.Fatalf("same status under another GUID: %+v, want ignored", a)
	}

	run := readPayload(t, "workflow_run/completed.payload.json")
	suite := rewrite(t, readPayload(t, "check_suite/completed.payload.json"), func(m map[string]any) {
		m["check_suite"].(map[string]any)["id"] = 1291536064 // the run's check_suite_id
	})
	if _, a := f.do(delivery("workflow_run", "r1", run)); a.Status != "queued" {
		t.Fatalf("workflow_run: %+v, want queued", a)
	}
	if _, a := f.do(delivery("check_suite", "c1", suite)); a.Status != "ignored" {
		t.Fatalf("check_suite of the posted run: %+v, want ignored", a)
	}
	// A filtered status claims nothing: the same status, allowed, still posts.
}

func TestFilteredClaimsNoKey(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"), 100)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := metrics.New(prometheus.NewRegistry())
	filtered := New(Options{Secrets: [][]byte{[]byte(testSecret)}, MaxBodyBytes: 1 << 20,
		Filters: notify.Filters{Branches: []string{"nope"}}}, st, m, slog.New(slog.DiscardHandler))
	open := New(Options{Secrets: [][]byte{[]byte(testSecret)}, MaxBodyBytes: 1 << 20}, st, m, slog.New(slog.DiscardHandler))
	status := readPayload(t, "status/payload.json")
	w := httptest.NewRecorder()
	filtered.ServeHTTP(w, delivery("status", "f1", status))
	if !strings.Contains(w.Body.String(), `"filtered"`) {
		t.Fatalf("filtered handler answered %s", w.Body)
	}
	w = httptest.NewRecorder()
	open.ServeHTTP(w, delivery("status", "f2", status))
	if !strings.Contains(w.Body.String(), `"queued"`) {
		t.Fatalf("after a filtered copy, the allowed status answered %s, want queued", w.Body)
	}
}

// failingStore refuses every write, as a full disk or a lost database would.
type failingStore struct{ Store }

func (failingStore) Record(context.Context, *ledger.Delivery) (ledger.Result, error) {
	return 0, errors.New("disk I/O error")
}
func (failingStore) Stats(context.Context) (ledger.Stats, error) {
	return ledger.Stats{}, errors.New("disk I/O error")
}

func TestLedgerFailureAcknowledgesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	f.h.store = failingStore{f.store}
	code, a := f.do(delivery("workflow_run", "x1", readPayload(t, "workflow_run/completed.payload.json")))
	if code != 503 || a.Status != "" || a.Error == "" {
		t.Fatalf("got %d %+v, want 503 with an error and no status", code, a)
	}
	if got := testCounter(t, f.metrics.Failures.WithLabelValues(metrics.ReasonStorage)); got != 1 {
		t.Errorf("failures{storage} = %v, want 1", got)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, HealthPath, nil))
	if w.Code != 503 || !strings.Contains(w.Body.String(), `"unavailable"`) {
		t.Errorf("health with an unreadable ledger: %d %s, want 503 unavailable", w.Code, w.Body)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{Now: func() time.Time { return time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC) }})
	get := func() map[string]any {
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, HealthPath, nil))
		if w.Code != 200 {
			t.Fatalf("health: %d %s", w.Code, w.Body)
		}
		var m map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := get()
	if m["status"] != "ok" || m["last_delivery_at"] != nil || m["ledger_size"] != 0.0 ||
		m["ledger_backend"] != "sqlite" || m["slack"] != "log-only" || m["pending"] != 0.0 || m["failed"] != 0.0 {
		t.Errorf("empty ledger health: %v", m)
	}
	f.do(delivery("workflow_run", "h1", readPayload(t, "workflow_run/completed.payload.json")))
	f.do(delivery("push", "h2", readPayload(t, "push/payload.json")))
	m = get()
	if m["last_delivery_at"] != "2026-12-04T10:00:00Z" || m["ledger_size"] != 2.0 || m["pending"] != 1.0 {
		t.Errorf("health after two deliveries: %v", m)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, HealthPath, nil))
	if w.Code != 405 {
		t.Errorf("POST health: %d, want 405", w.Code)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{Filters: notify.Filters{Repos: []string{"octo-org/*"}}})
	run := readPayload(t, "workflow_run/completed.payload.json")
	f.do(delivery("workflow_run", "m1", run))                                                // queued
	f.do(delivery("workflow_run", "m1", run))                                                // duplicate
	f.do(delivery("pull_request", "m2", readPayload(t, "pull_request/opened.payload.json"))) // filtered
	f.do(delivery("push", "m3", readPayload(t, "push/payload.json")))                        // ignored
	bad := delivery("push", "m4", run)
	bad.Header.Set("X-Hub-Signature-256", sign("wrong", run))
	f.do(bad) // refused

	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, MetricsPath, nil))
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("metrics JSON: %v: %s", err, w.Body)
	}
	want := map[string]float64{"deliveries": 4, "failures": 1, "dedup_hits": 1, "queued": 1, "filtered": 1,
		"ignored": 1, "slack_posts": 0, "slack_failures": 0, "retries": 0}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("metrics[%q] = %v, want %v", k, m[k], v)
		}
	}
	hist, ok := m["processing_seconds"].(map[string]any)
	if !ok || hist["count"] != 5.0 {
		t.Errorf("processing_seconds = %v, want a histogram of 5 requests", m["processing_seconds"])
	}

	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, MetricsPath+"?format=prometheus", nil),
		func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, MetricsPath, nil)
			r.Header.Set("Accept", "text/plain")
			return r
		}(),
	} {
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		text, _ := io.ReadAll(w.Body)
		for _, line := range []string{"ciwebhook_deliveries_total 4", "ciwebhook_dedup_hits_total 1",
			`ciwebhook_failures_total{reason="bad_signature"} 1`, "ciwebhook_processing_seconds_count 5"} {
			if !strings.Contains(string(text), line+"\n") {
				t.Errorf("%s: Prometheus text lacks %q", r.URL, line)
			}
		}
		if strings.Contains(string(text), "octo-org") {
			t.Errorf("a repository name is a label in the Prometheus text")
		}
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	h := Disabled()
	for _, r := range []*http.Request{
		delivery("workflow_run", "d1", []byte(`{}`)),
		httptest.NewRequest(http.MethodGet, HealthPath, nil),
		httptest.NewRequest(http.MethodGet, MetricsPath, nil),
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 404 || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q, want a JSON 404", r.Method, r.URL, w.Code, w.Header().Get("Content-Type"))
		}
	}
}

func testCounter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}
