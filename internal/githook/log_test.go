package githook

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// Operators search the log by delivery GUID, event, action, repository and
// outcome: the one "delivery" line per answered delivery carries them all,
// and never the secret.
func TestDeliveryLogLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, event, file, guid string
		want                    map[string]string
	}{
		{"queued", "workflow_run", "workflow_run/completed.payload.json", "log-queued", map[string]string{
			"delivery": "log-queued", "event": "workflow_run", "action": "completed",
			"repo": "octo-org/octo-repo", "status": "queued",
		}},
		{"ignored", "pull_request", "pull_request/labeled.payload.json", "log-ignored", map[string]string{
			"delivery": "log-ignored", "event": "pull_request", "action": "labeled",
			"repo": "Codertocat/Hello-World", "status": "ignored",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Options{})
			var buf strings.Builder
			f.h.log = slog.New(slog.NewJSONHandler(&buf, nil))
			body := readPayload(t, tc.file)
			if code, a := f.do(delivery(tc.event, tc.guid, body)); code != 202 || a.Status != tc.want["status"] {
				t.Fatalf("delivery: %d %+v", code, a)
			}
			var lines []map[string]any
			sc := bufio.NewScanner(strings.NewReader(buf.String()))
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
				}
				if m["msg"] == "delivery" {
					lines = append(lines, m)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("want exactly one \"delivery\" line, got %d in:\n%s", len(lines), buf.String())
			}
			for k, v := range tc.want {
				if got, _ := lines[0][k].(string); got != v {
					t.Errorf("%s = %q, want %q (line %v)", k, got, v, lines[0])
				}
			}
			if strings.Contains(buf.String(), testSecret) || strings.Contains(buf.String(), sign(testSecret, body)) {
				t.Errorf("the secret or the signature reached the log:\n%s", buf.String())
			}
		})
	}
}
