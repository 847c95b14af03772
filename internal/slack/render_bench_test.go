package slack

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/event"
)

// BenchmarkRender renders the notification of each kind's real payload and
// encodes it as the webhook's JSON body (what the worker does per message).
func BenchmarkRender(b *testing.B) {
	const dir = "../../../shared/github-payloads"
	for _, p := range []struct{ event, file string }{
		{"workflow_run", "workflow_run/completed.payload.json"},
		{"check_suite", "check_suite/completed.payload.json"},
		{"check_run", "check_run/completed.1.payload.json"},
		{"pull_request", "pull_request/opened.payload.json"},
		{"status", "status/payload.json"},
	} {
		body, err := os.ReadFile(filepath.Join(dir, p.file))
		if err != nil {
			b.Fatalf("the real payloads are required: %v", err)
		}
		s, err := event.Summarize(p.event, body, event.Options{})
		if err != nil || s.Note == nil {
			b.Fatalf("%s: no notification (%v)", p.file, err)
		}
		b.Run(p.event, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(Render(*s.Note)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
