package githook

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
)

// decodeBody checks only the first byte; the JSON is validated by
// event.Summarize's decoding. These bodies are objects at first sight but
// not JSON: every event, supported or not, must refuse them with the same
// 400 as before, and store nothing.
func TestInvalidJSONIsRefusedForEveryEvent(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := New(Options{Secrets: [][]byte{[]byte(benchSecret)}, MaxBodyBytes: 1 << 20}, st,
		metrics.New(prometheus.NewRegistry()), slog.New(slog.NewJSONHandler(io.Discard, nil)))
	bodies := []string{
		`{`,
		`{"action": "completed"`,
		`{"action": completed}`,
		`{"action": "completed"} trailing`,
		`{"action": "completed"}{"action": "completed"}`,
		`{"a": "` + "\x01" + `"}`,
		` {"workflow_run": {"name": "CI",}}`,
	}
	for _, event := range []string{"workflow_run", "check_suite", "check_run", "pull_request", "status", "ping", "push", "anything_else"} {
		for _, body := range bodies {
			for _, form := range []bool{false, true} {
				raw, ct := body, "application/json"
				if form {
					raw, ct = "payload="+url.QueryEscape(body), "application/x-www-form-urlencoded"
				}
				r := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(raw))
				r.Header.Set("Content-Type", ct)
				r.Header.Set("X-GitHub-Event", event)
				r.Header.Set("X-GitHub-Delivery", "invalid-json")
				r.Header.Set("X-Hub-Signature-256", benchSign([]byte(raw)))
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				var a answer
				json.Unmarshal(w.Body.Bytes(), &a)
				if w.Code != http.StatusBadRequest || a.Error != notJSONObject {
					t.Errorf("%s, %s body %q: %d %q, want 400 %q", event, ct, body, w.Code, a.Error, notJSONObject)
				}
			}
		}
	}
	if s, err := st.Stats(context.Background()); err != nil || s.Size != 0 {
		t.Errorf("Stats = %+v, %v: a refused delivery was stored", s, err)
	}
}
