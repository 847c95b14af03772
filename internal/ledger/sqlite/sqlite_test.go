package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/ledgertest"
)

func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T, dir string, limit int) ledger.Store {
		s, err := Open(context.Background(), filepath.Join(dir, "sub", "ledger.db"), limit)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A ledger written by the version before routes has no destination column:
// Open adds it, and the rows it still owes go to the default destination.
func TestUpgradeAddsDestination(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(ctx, path, 100)
	if err != nil {
		t.Fatal(err)
	}
	d := newRow("owed-before-upgrade")
	if _, err := s.Record(ctx, d); err != nil {
		t.Fatal(err)
	}
	// Back to the old shape: the column and its index gone.
	if _, err := s.w.Exec(`DROP INDEX deliveries_pending; ALTER TABLE deliveries DROP COLUMN destination;
		CREATE INDEX deliveries_due ON deliveries(state, seq)`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openT(t, path, 100)
	rows, err := s.Due(ctx, "", time.Now(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].GUID != d.GUID || rows[0].Destination != "" {
		t.Fatalf("Due after the upgrade = %+v, want the owed row on the default destination", rows)
	}
	routed := newRow("routed")
	routed.Destination = "api-team"
	if _, err := s.Record(ctx, routed); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "routed"); err != nil || got.Destination != "api-team" {
		t.Fatalf("Get(routed) = %+v, %v; want destination api-team", got.Destination, err)
	}
}
