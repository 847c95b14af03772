package sqlite

import (
	"context"
	"path/filepath"
	"testing"

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
