package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/ledgertest"
	"github.com/ciwebhook/ciwebhook/internal/ledger/postgres/pgtest"
)

func open(t *testing.T, dsn string, limit int) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, limit)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	pgtest.URL(t)
	ledgertest.Run(t, func(t *testing.T, dir string, limit int) ledger.Store {
		return open(t, pgtest.Schema(t, dir), limit)
	})
}

// Replicas starting together all create (or find) the schema.
func TestConcurrentStart(t *testing.T) {
	dsn := pgtest.Schema(t, "start")
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			s, err := Open(context.Background(), dsn, 100)
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent start: %v", err)
		}
	}
}

// The same delivery sent to three replicas at the same instant is
// accepted once.
func TestDedupAcrossReplicas(t *testing.T) {
	dsn := pgtest.Schema(t, "dedup")
	var replicas []*Store
	for range 3 {
		s := open(t, dsn, 1000)
		defer s.Close()
		replicas = append(replicas, s)
	}
	for i := range 20 {
		var wg sync.WaitGroup
		results := make(chan ledger.Result, 9)
		for j := range 9 {
			wg.Go(func() {
				d := &ledger.Delivery{GUID: "g-" + string(rune('a'+i)), Event: "ping", ReceivedAt: time.Now(), State: ledger.Ignored}
				r, err := replicas[j%3].Record(context.Background(), d)
				if err != nil {
					t.Error(err)
				}
				results <- r
			})
		}
		wg.Wait()
		close(results)
		recorded := 0
		for r := range results {
			if r == ledger.Recorded {
				recorded++
			}
		}
		if recorded != 1 {
			t.Fatalf("delivery %d recorded %d times across replicas, want once", i, recorded)
		}
	}
}

func TestClaim(t *testing.T) {
	dsn := pgtest.Schema(t, "claim")
	a, b := open(t, dsn, 1000), open(t, dsn, 1000)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	d := &ledger.Delivery{GUID: "c1", Event: "status", ReceivedAt: time.Now(), State: ledger.Pending, Message: []byte(`{}`)}
	if _, err := a.Record(ctx, d); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Claim(ctx, "c1", time.Minute); !ok || err != nil {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	if ok, _ := b.Claim(ctx, "c1", time.Minute); ok {
		t.Fatal("a claimed row was claimed again by another replica")
	}
	if rows, _ := b.Due(ctx, "", time.Now(), 0, 10); len(rows) != 0 {
		t.Errorf("Due on another replica returned a claimed row: %v", rows)
	}
	// A lease that ends hands the row on, as when its holder died.
	if ok, _ := a.Claim(ctx, "c1", time.Minute); !ok {
		t.Fatal("the holder could not renew its own claim (as after a 429)")
	}
	if _, err := a.pool.Exec(ctx, `UPDATE deliveries SET claimed_until = 1 WHERE guid = 'c1'`); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Claim(ctx, "c1", time.Minute); !ok {
		t.Fatal("after the lease ended, another replica could not claim the row")
	}
	// Finishing releases the claim.
	if err := b.Reschedule(ctx, "c1", 1, "HTTP 500", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if rows, _ := a.Due(ctx, "", time.Now(), 0, 10); len(rows) != 1 {
		t.Errorf("a rescheduled row is not due again: %v", rows)
	}
}

// One replica at a time holds the delivery lock; when it lets go, another
// takes over.
func TestLeadFailover(t *testing.T) {
	dsn := pgtest.Schema(t, "lead")
	a, b := open(t, dsn, 1000), open(t, dsn, 1000)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lead, err := a.Lead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan context.Context, 1)
	go func() {
		l, err := b.Lead(ctx)
		if err == nil {
			got <- l
		}
	}()
	select {
	case <-got:
		t.Fatal("two replicas lead at once")
	case <-time.After(3 * time.Second):
	}
	a.Close() // the leader goes away (its sessions end)
	select {
	case <-lead.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the old leader did not notice it lost the lock")
	}
	select {
	case l := <-got:
		if l.Err() != nil {
			t.Fatal("new leadership already ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no failover within 10s")
	}
}

func TestDatabaseDownAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, "postgres://ciwebhook:hunter2secret@127.0.0.1:1/nope?sslmode=disable&connect_timeout=2", 10)
	if err == nil {
		t.Fatal("Open against a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("error shows the password: %v", err)
	}
	if _, err := Open(ctx, "::not a url", 10); err == nil || strings.Contains(err.Error(), "not a url") {
		t.Errorf("a malformed DATABASE_URL: %v (must fail without quoting it)", err)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"failed to connect to postgres://u:hunter2@h:5432/db",
		"bad dsn host=h password=hunter2 user=u",
		"bad dsn password='hunter2 with spaces' user=u",
	} {
		if got := redact(errors.New(in)); strings.Contains(got, "hunter2") || !strings.Contains(got, "[redacted]") {
			t.Errorf("redact(%q) = %q", in, got)
		}
	}
}
