package githook

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
)

// memStore is a map, so the fuzzer spends its time in the handler.
type memStore struct {
	mu   sync.Mutex
	rows map[string]ledger.Delivery
}

func (m *memStore) Record(_ context.Context, d *ledger.Delivery) (ledger.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.rows[d.GUID]; ok {
		return ledger.Duplicate, nil
	}
	m.rows[d.GUID] = *d
	return ledger.Recorded, nil
}
func (m *memStore) Subject(context.Context, string) ([]ledger.Delivery, error) { return nil, nil }

// Streak judges every run as new: the fuzzer runs in mode all.
func (m *memStore) Streak(context.Context, string, ledger.StreakRun) (ledger.StreakVerdict, error) {
	return ledger.StreakVerdict{Verdict: ledger.VerdictFailed}, nil
}
func (m *memStore) Stats(context.Context) (ledger.Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return ledger.Stats{Size: len(m.rows)}, nil
}

// FuzzWebhook drives verify and parse with arbitrary bodies, events and
// content types: signed input never gets a 5xx, unsigned input never gets
// past 401, and nothing unsigned is ever stored.
func FuzzWebhook(f *testing.F) {
	dirs, _ := os.ReadDir(payloads)
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(payloads, d.Name(), "*.json"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(d.Name(), b, true, "application/json")
		}
	}
	f.Add("workflow_run", []byte(`{"workflow_run":"x"}`), true, "application/json")
	f.Add("status", []byte(`payload=%7B%7D`), true, "application/x-www-form-urlencoded")
	f.Add("ping", []byte(`{}`), false, "application/json")

	st := &memStore{rows: map[string]ledger.Delivery{}}
	h := New(Options{Secrets: [][]byte{[]byte(testSecret)}, MaxBodyBytes: 64 << 10}, st,
		metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))

	f.Fuzz(func(t *testing.T, event string, body []byte, signed bool, contentType string) {
		r := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(string(body)))
		r.Header.Set("Content-Type", contentType)
		r.Header.Set("X-GitHub-Event", event)
		r.Header.Set("X-GitHub-Delivery", "fuzz")
		if signed {
			r.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
		} else {
			r.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
		}
		before, _ := st.Stats(context.Background())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		after, _ := st.Stats(context.Background())
		switch {
		case w.Code >= 500:
			t.Fatalf("%d for event %q: %s", w.Code, event, w.Body)
		case !signed && w.Code != http.StatusUnauthorized && w.Code != http.StatusRequestEntityTooLarge:
			t.Fatalf("unsigned body answered %d", w.Code)
		case w.Code >= 400 && after.Size != before.Size:
			t.Fatalf("refused with %d but stored", w.Code)
		case w.Header().Get("Content-Type") != "application/json":
			t.Fatalf("Content-Type %q", w.Header().Get("Content-Type"))
		}
		st.mu.Lock()
		delete(st.rows, "fuzz") // each input starts from an empty ledger
		st.mu.Unlock()
	})
}
