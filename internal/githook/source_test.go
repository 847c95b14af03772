package githook

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/metrics"
)

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSourceAllow(t *testing.T) {
	t.Parallel()
	// GitHub's hook ranges stand in for the allowlist; 10.0.0.0/8 and
	// fd00::/8 are the proxies in front of the service.
	src := Sources{
		Allowed: prefixes(t, "192.30.252.0/22", "140.82.112.0/20", "2606:50c0::/32"),
		Trusted: prefixes(t, "10.0.0.0/8", "fd00::/8"),
	}
	cases := []struct {
		name       string
		remote     string
		xff        []string // one entry per X-Forwarded-For header line
		wantClient string
		wantOK     bool
	}{
		{"direct IPv4, allowed", "192.30.252.10:40000", nil, "192.30.252.10", true},
		{"direct IPv4, refused", "203.0.113.7:40000", nil, "203.0.113.7", false},
		{"direct IPv6, allowed", "[2606:50c0:8000::154]:443", nil, "2606:50c0:8000::154", true},
		{"direct IPv6, refused", "[2001:db8::1]:443", nil, "2001:db8::1", false},
		{"IPv4-mapped peer matches an IPv4 prefix", "[::ffff:140.82.115.1]:5000", nil, "140.82.115.1", true},
		{"XFF from an untrusted peer is ignored", "203.0.113.7:1", []string{"192.30.252.10"}, "203.0.113.7", false},
		{"XFF from an untrusted, allowed peer is ignored", "192.30.252.10:1", []string{"203.0.113.7"}, "192.30.252.10", true},
		{"one trusted proxy, allowed client", "10.0.0.2:1", []string{"192.30.252.10"}, "192.30.252.10", true},
		{"one trusted proxy, refused client", "10.0.0.2:1", []string{"203.0.113.7"}, "203.0.113.7", false},
		{"one trusted proxy, forged entry to the left", "10.0.0.2:1", []string{"192.30.252.10, 203.0.113.7"}, "203.0.113.7", false},
		{"two trusted proxies", "10.0.0.2:1", []string{"192.30.252.10, 10.9.9.9"}, "192.30.252.10", true},
		{"two trusted proxies, two header lines", "10.0.0.2:1", []string{"192.30.252.10", "10.9.9.9"}, "192.30.252.10", true},
		{"two trusted proxies, forged entry beyond them", "10.0.0.2:1", []string{"192.30.252.10, 203.0.113.7, 10.9.9.9"}, "203.0.113.7", false},
		{"IPv6 proxies", "[fd00::1]:1", []string{"2606:50c0:8000::154, fd00::2"}, "2606:50c0:8000::154", true},
		{"XFF entries with ports", "10.0.0.2:1", []string{"[2606:50c0::9]:1234, 10.1.1.1:80"}, "2606:50c0::9", true},
		{"trusted proxy without XFF is the client", "10.0.0.2:1", nil, "10.0.0.2", false},
		{"every entry a trusted proxy", "10.0.0.2:1", []string{"10.3.3.3, 10.4.4.4"}, "10.3.3.3", false},
		{"malformed XFF: the proxy is the client", "10.0.0.2:1", []string{"github.com"}, "10.0.0.2", false},
		{"malformed XFF cannot smuggle an allowed address", "10.0.0.2:1", []string{"192.30.252.10, not-an-ip"}, "10.0.0.2", false},
		{"malformed XFF behind a second proxy", "10.0.0.2:1", []string{"192.30.252.10,, 10.9.9.9"}, "10.9.9.9", false},
		{"unreadable peer address", "somewhere", nil, "unknown", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, Path, nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			client, ok := src.Allow(r)
			if client != tc.wantClient || ok != tc.wantOK {
				t.Errorf("Allow = (%q, %v), want (%q, %v)", client, ok, tc.wantClient, tc.wantOK)
			}
		})
	}
}

// A malformed XFF from a trusted proxy that is itself allowed is let in as
// that proxy: it is the nearest party anyone vouches for.
func TestSourceMalformedXFFFromAllowedProxy(t *testing.T) {
	t.Parallel()
	src := Sources{Allowed: prefixes(t, "10.0.0.2/32"), Trusted: prefixes(t, "10.0.0.2/32")}
	r := httptest.NewRequest(http.MethodPost, Path, nil)
	r.RemoteAddr = "10.0.0.2:9"
	r.Header.Set("X-Forwarded-For", "garbage")
	if client, ok := src.Allow(r); client != "10.0.0.2" || !ok {
		t.Errorf("Allow = (%q, %v), want the allowed proxy itself", client, ok)
	}
}

func TestSourceZeroValueAllowsAll(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodPost, Path, nil)
	r.RemoteAddr = "not even an address"
	if _, ok := (Sources{}).Allow(r); !ok {
		t.Error("the zero Sources refused a request; it must allow every source")
	}
}

// untouchable fails the test if the handler reads the body.
type untouchable struct{ t *testing.T }

func (u untouchable) Read([]byte) (int, error) {
	u.t.Error("the body of a refused source was read")
	return 0, io.EOF
}

func TestRefusedSourceBeforeBody(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{Sources: Sources{Allowed: prefixes(t, "192.30.252.0/22")}})
	body := readPayload(t, "workflow_run/completed.payload.json")

	r := delivery("workflow_run", "src-1", body)
	r.Body = io.NopCloser(untouchable{t})
	r.RemoteAddr = "203.0.113.7:5555"
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var a answer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if w.Code != http.StatusForbidden || !strings.Contains(a.Error, "203.0.113.7") {
		t.Errorf("refused source: %d %+v, want 403 naming the address", w.Code, a)
	}
	if got := testCounter(t, f.metrics.Failures.WithLabelValues(metrics.ReasonSource)); got != 1 {
		t.Errorf("failures{reason=source_refused} = %v, want 1", got)
	}
	if n := f.size(t); n != 0 {
		t.Errorf("a refused source left %d rows", n)
	}
	// A GET from a refused source learns nothing about the route either.
	get := httptest.NewRequest(http.MethodGet, Path, nil)
	get.RemoteAddr = "203.0.113.7:5555"
	if code, _ := f.do(get); code != http.StatusForbidden {
		t.Errorf("GET from a refused source: %d, want 403", code)
	}

	// Health and metrics stay open: probes and scrapers come from elsewhere.
	for _, p := range []string{HealthPath, MetricsPath} {
		r := httptest.NewRequest(http.MethodGet, p, nil)
		r.RemoteAddr = "203.0.113.7:5555"
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s from a source outside the allowlist: %d, want 200", p, w.Code)
		}
	}

	// An allowed source goes through as before.
	ok := delivery("workflow_run", "src-2", body)
	ok.RemoteAddr = "192.30.252.10:5555"
	if code, a := f.do(ok); code != http.StatusAccepted || a.Status != "queued" {
		t.Errorf("allowed source: %d %+v, want 202 queued", code, a)
	}
}

// The refusal series exists from the start, so a dashboard shows 0, not a gap.
func TestSourceRefusedStartsAtZero(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	out, err := f.metrics.JSON()
	if err != nil {
		t.Fatal(err)
	}
	by, _ := out["failures_by_reason"].(map[string]float64)
	if v, ok := by[metrics.ReasonSource]; !ok || v != 0 {
		t.Errorf("failures_by_reason = %v, want source_refused at 0", out["failures_by_reason"])
	}
}
