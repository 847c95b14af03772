package file

import (
	"path/filepath"
	"testing"

	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/ledgertest"
)

// BenchmarkRecord: the JSON-lines ledger, with its real fsync per write.
func BenchmarkRecord(b *testing.B) {
	ledgertest.BenchRecord(b, func(b *testing.B, dir string, limit int) ledger.Store {
		s, err := Open(filepath.Join(dir, "ledger.jsonl"), limit)
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
