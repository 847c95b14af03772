package githook

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/notify"
	"github.com/ciwebhook/ciwebhook/internal/route"
)

func routedFixture(t *testing.T) *fixture {
	t.Helper()
	const file = `routes:
  - name: platform-live
    repos: ["octo-org/*", "codertocat/*"]
    channel: C0123456789
    continue: true
  - name: audit
    webhook_url: https://hooks.slack.com/services/T/B/audit
`
	routes, err := route.Parse("routes.yaml", []byte(file), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return newFixture(t, Options{Filters: notify.Filters{Routes: routes}})
}

// A delivery two routes take is one row per destination: the first holds
// the GUID (the dedup), the other "<guid>/<route>", each with its own key.
func TestRoutedRowPerDestination(t *testing.T) {
	t.Parallel()
	f := routedFixture(t)
	run := readPayload(t, "workflow_run/completed.payload.json")
	if _, a := f.do(delivery("workflow_run", "r1", run)); a.Status != "queued" {
		t.Fatalf("answer %+v, want queued", a)
	}
	first, err := f.store.Get(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.store.Get(context.Background(), "r1/audit")
	if err != nil {
		t.Fatal(err)
	}
	if first.Destination != "platform-live" || first.State != ledger.Pending || first.Key != "suite:1291536064@platform-live" {
		t.Errorf("first row %+v, want pending to platform-live with its own key", first)
	}
	if second.Destination != "audit" || second.State != ledger.Pending || second.Key != "suite:1291536064@audit" || string(second.Message) != string(first.Message) {
		t.Errorf("second row %+v, want the same message pending to audit with its own key", second)
	}
	if n := f.size(t); n != 2 {
		t.Errorf("ledger holds %d rows, want 2", n)
	}

	// A redelivery changes nothing.
	if code, a := f.do(delivery("workflow_run", "r1", run)); code != 200 || a.Status != "duplicate" {
		t.Fatalf("redelivery: %d %+v, want 200 duplicate", code, a)
	}
	if n := f.size(t); n != 2 {
		t.Errorf("after a redelivery the ledger holds %d rows, want 2", n)
	}

	// The same run's suite is said once per destination: both keys are taken.
	suite := rewrite(t, readPayload(t, "check_suite/completed.payload.json"), func(m map[string]any) {
		m["check_suite"].(map[string]any)["id"] = 1291536064
		m["repository"].(map[string]any)["full_name"] = "octo-org/octo-repo"
	})
	if _, a := f.do(delivery("check_suite", "c1", suite)); a.Status != "ignored" {
		t.Fatalf("check_suite of the posted run: %+v, want ignored", a)
	}
	for _, guid := range []string{"c1", "c1/audit"} {
		if d, err := f.store.Get(context.Background(), guid); err != nil || d.State != ledger.Ignored {
			t.Errorf("%s: %+v, %v; want ignored (already said there)", guid, d.State, err)
		}
	}
}

// A run on its way goes to the channel route only; the webhook route after
// it could not update it later.
func TestRoutedInterimToChannelOnly(t *testing.T) {
	t.Parallel()
	f := routedFixture(t)
	if _, a := f.do(delivery("workflow_run", "q1", readPayload(t, "workflow_run/requested.payload.json"))); a.Status != "queued" {
		t.Fatalf("answer %+v, want queued", a)
	}
	d, err := f.store.Get(context.Background(), "q1")
	if err != nil || d.Destination != "platform-live" || d.Key != "" {
		t.Fatalf("row %+v, %v; want pending to platform-live, claiming no key", d, err)
	}
	if _, err := f.store.Get(context.Background(), "q1/audit"); err == nil {
		t.Error("a row for the webhook route was recorded")
	}
}

// secondFails fails the first Record of a destination's own row, as a
// ledger that goes away between the two writes would.
type secondFails struct {
	Store
	failed bool
}

func (s *secondFails) Record(ctx context.Context, d *ledger.Delivery) (ledger.Result, error) {
	if strings.Contains(d.GUID, "/") && !s.failed {
		s.failed = true
		return 0, errors.New("disk full")
	}
	return s.Store.Record(ctx, d)
}

// When the second row could not be written the delivery is not
// acknowledged, and GitHub's redelivery writes what is missing.
func TestRoutedRedeliveryCompletesTheRows(t *testing.T) {
	t.Parallel()
	f := routedFixture(t)
	f.h.store = &secondFails{Store: f.store}
	run := readPayload(t, "workflow_run/completed.payload.json")
	if code, _ := f.do(delivery("workflow_run", "r1", run)); code != http.StatusServiceUnavailable {
		t.Fatalf("answer %d, want 503 while a row is missing", code)
	}
	if code, a := f.do(delivery("workflow_run", "r1", run)); code != 200 || a.Status != "duplicate" {
		t.Fatalf("redelivery: %d %+v, want 200 duplicate", code, a)
	}
	if d, err := f.store.Get(context.Background(), "r1/audit"); err != nil || d.State != ledger.Pending {
		t.Fatalf("r1/audit after the redelivery: %+v, %v; want it owed", d, err)
	}
}

// When the first destination has already said it but another is owed the
// message, the answer is queued and the worker is woken.
func TestRoutedQueuedWhenAnyDestinationIsOwed(t *testing.T) {
	t.Parallel()
	const file = `routes:
  - name: everything
    continue: true
    webhook_url: https://hooks.slack.com/services/T/B/all
  - name: suites
    events: ["check_suite"]
    webhook_url: https://hooks.slack.com/services/T/B/suites
`
	routes, err := route.Parse("routes.yaml", []byte(file), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Options{Filters: notify.Filters{Routes: routes}})
	if _, a := f.do(delivery("workflow_run", "r1", readPayload(t, "workflow_run/completed.payload.json"))); a.Status != "queued" {
		t.Fatalf("run: %+v, want queued", a)
	}
	suite := rewrite(t, readPayload(t, "check_suite/completed.payload.json"), func(m map[string]any) {
		m["check_suite"].(map[string]any)["id"] = 1291536064 // the run's suite, from another app
	})
	f.mu.Lock()
	woken := f.woken
	f.mu.Unlock()
	if _, a := f.do(delivery("check_suite", "c1", suite)); a.Status != "queued" {
		t.Fatalf("suite: %+v, want queued (the suites route is owed it)", a)
	}
	if d, _ := f.store.Get(context.Background(), "c1"); d.State != ledger.Ignored {
		t.Errorf("c1 %s, want ignored: the run was said at everything", d.State)
	}
	if d, _ := f.store.Get(context.Background(), "c1/suites"); d.State != ledger.Pending {
		t.Errorf("c1/suites %s, want pending", d.State)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.woken != woken+1 {
		t.Errorf("worker woken %d times, want once more", f.woken-woken)
	}
}
