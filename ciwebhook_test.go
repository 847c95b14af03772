package ciwebhook

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/config"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
)

// Messages owed to a route that CONFIG_FILE no longer names are not read by
// any lane: start-up says so, naming the route and how many wait.
func TestStartupWarnsOfMessagesOwedToRemovedRoutes(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"GITHUB_WEBHOOK_SECRET": "x",
		"LEDGER_PATH":           filepath.Join(dir, "ledger.db"),
		"CONFIG_FILE":           filepath.Join(dir, "routes.yaml"),
	}
	getenv := func(k string) string { return env[k] }
	if err := os.WriteFile(env["CONFIG_FILE"], []byte("routes:\n  - name: kept\n    webhook_url: https://hooks.slack.com/services/T/B/kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenLedger(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, dest := range []string{"renamed", "renamed", "kept", ""} {
		d := &ledger.Delivery{GUID: "g" + string(rune('a'+i)), Event: "status", ReceivedAt: time.Now(), State: ledger.Pending,
			Message: []byte(`{"kind":"status"}`), Destination: dest}
		if _, err := st.Record(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	var logs bytes.Buffer
	svc, err := New(context.Background(), Options{Getenv: getenv, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	var warned []string
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, "no longer names") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], `"route":"renamed"`) || !strings.Contains(warned[0], `"owed":2`) {
		t.Errorf("warnings %q, want one about the 2 messages owed to renamed", warned)
	}
}
