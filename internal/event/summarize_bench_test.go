package event

import "testing"

// benchPayloads is one real payload per event, each one that notifies
// where the event can (docs/PERFORMANCE.md quotes these).
var benchPayloads = []struct{ event, file string }{
	{"workflow_run", "workflow_run/completed.payload.json"},
	{"check_suite", "check_suite/completed.payload.json"},
	{"check_run", "check_run/completed.1.payload.json"},
	{"pull_request", "pull_request/opened.payload.json"},
	{"status", "status/payload.json"},
	{"push", "push/payload.json"}, // any other event: the generic summary
}

// BenchmarkSummarize decodes and summarizes each event's real payload,
// which is the whole of the request path's JSON work.
func BenchmarkSummarize(b *testing.B) {
	for _, p := range benchPayloads {
		body := readPayload(b, p.file)
		b.Run(p.event, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := Summarize(p.event, body, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
