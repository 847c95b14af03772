package githook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ciwebhook/ciwebhook/internal/event"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
)

// The benchmarks keep their own helpers so that they do not depend on the
// tests' fixtures.

const (
	benchSecret   = "s3cret-for-benchmarks"
	benchPayloads = "../../../shared/github-payloads"
)

func benchBody(b *testing.B, rel string) []byte {
	b.Helper()
	body, err := os.ReadFile(filepath.Join(benchPayloads, rel))
	if err != nil {
		b.Fatalf("the real payloads are required: %v", err)
	}
	return body
}

func benchSign(body []byte) string {
	mac := hmac.New(sha256.New, []byte(benchSecret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// BenchmarkVerify is the HMAC check of the real 21.9 KB workflow_run payload.
func BenchmarkVerify(b *testing.B) {
	body := benchBody(b, "workflow_run/completed.payload.json")
	header := benchSign(body)
	secrets := [][]byte{[]byte(benchSecret)}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := verify(secrets, body, header); err != nil {
			b.Fatal(err)
		}
	}
}

// sizedBody is a workflow_run completed payload of about n bytes: the fields
// Summarize reads, from the real payload, and then as many copies of the
// real payload's sender object (a typical GitHub user, 967 bytes) as make
// up the size, so the filler is JSON of GitHub's own shape.
func sizedBody(b *testing.B, n int) []byte {
	b.Helper()
	var real map[string]any
	if err := json.Unmarshal(benchBody(b, "workflow_run/completed.payload.json"), &real); err != nil {
		b.Fatal(err)
	}
	run := real["workflow_run"].(map[string]any)
	keep := map[string]any{}
	for _, k := range []string{"name", "path", "head_branch", "head_sha", "status", "conclusion", "html_url",
		"run_number", "check_suite_id", "run_started_at", "updated_at", "head_commit"} {
		keep[k] = run[k]
	}
	keep["actor"] = map[string]any{"login": "octocat"}
	repo := real["repository"].(map[string]any)
	base := map[string]any{
		"action":       real["action"],
		"workflow_run": keep,
		"repository":   map[string]any{"full_name": repo["full_name"], "html_url": repo["html_url"]},
		"sender":       map[string]any{"login": "octocat"},
	}
	unit, err := json.Marshal(real["sender"])
	if err != nil {
		b.Fatal(err)
	}
	head, err := json.Marshal(base)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Write(head[:len(head)-1])
	buf.WriteString(`,"filler":[`)
	for i := 0; buf.Len()+len(unit)+3 <= n; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(unit)
	}
	buf.WriteString("]}")
	return buf.Bytes()
}

// BenchmarkBodySize is the request path's work on a body, from 2 KB to just
// under the 2 MiB MAX_BODY_BYTES: verify, decode, summarize. It should grow
// linearly (constant MB/s).
func BenchmarkBodySize(b *testing.B) {
	secrets := [][]byte{[]byte(benchSecret)}
	for _, n := range []int{2_000, 20_000, 200_000, 2_000_000} {
		body := sizedBody(b, n)
		header := benchSign(body)
		b.Run(fmt.Sprintf("bytes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := verify(secrets, body, header); err != nil {
					b.Fatal(err)
				}
				payload, status, msg := decodeBody("application/json", body)
				if status != 0 {
					b.Fatal(msg)
				}
				s, err := event.Summarize("workflow_run", payload, event.Options{})
				if err != nil || s.Note == nil {
					b.Fatalf("Summarize: %v (note %v)", err, s.Note)
				}
			}
		})
	}
}

// benchHandler is the handler as ciwebhook serve builds it: a real SQLite
// ledger (WAL, synchronous=FULL) at the default limit, JSON logs at warn.
func benchHandler(b *testing.B) *Handler {
	b.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "ledger.db"), 1000)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return New(Options{
		Secrets: [][]byte{[]byte(benchSecret)}, MaxBodyBytes: 2 << 20,
		Backend: "sqlite", SlackMode: "log-only",
	}, st, metrics.New(prometheus.NewRegistry()), log)
}

var benchSeq atomic.Int64

func benchServe(b *testing.B, h *Handler, body []byte, signature string) {
	r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", "workflow_run")
	r.Header.Set("X-GitHub-Delivery", "bench-"+strconv.FormatInt(benchSeq.Add(1), 10))
	r.Header.Set("X-Hub-Signature-256", signature)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusAccepted {
		b.Fatalf("status %d: %s", w.Code, w.Body)
	}
}

// BenchmarkServeHTTP takes the real workflow_run payload through the whole
// handler, each delivery with a new GUID, into a real SQLite ledger: one at
// a time (serial), and from 32 goroutines as 32 connections would (parallel;
// concurrent requests may share a commit).
func BenchmarkServeHTTP(b *testing.B) {
	body := benchBody(b, "workflow_run/completed.payload.json")
	signature := benchSign(body)
	b.Run("serial", func(b *testing.B) {
		h := benchHandler(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			benchServe(b, h, body, signature)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		h := benchHandler(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		b.SetParallelism(16) // 16 × GOMAXPROCS (2 here) = 32 goroutines
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				benchServe(b, h, body, signature)
			}
		})
	})
}
