// Package pgtest gives each test a PostgreSQL schema of its own on the
// server named by CIWEBHOOK_TEST_DATABASE_URL. Without it (or when the
// server cannot be reached) tests skip, except under CI=true, where they
// fail: CI must never pass by skipping.
package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the test database.
const EnvVar = "CIWEBHOOK_TEST_DATABASE_URL"

// URL returns the test server's connection string, skipping (or, under
// CI, failing) the test when there is none that answers.
func URL(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvVar)
	if dsn == "" {
		unavailable(t, EnvVar+" is not set")
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		unavailable(t, "cannot connect to "+EnvVar+": "+err.Error())
		return ""
	}
	conn.Close(ctx)
	return dsn
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL tests must run in CI: %s", why)
	}
	t.Skipf("PostgreSQL tests skipped: %s", why)
}

var (
	mu   sync.Mutex
	made = map[string]bool{} // schemas this process created
)

// Schema returns a connection string whose search_path is a schema named
// after key, created if needed and dropped when the test ends. The same key
// gives the same schema, so a test can "restart" a store on it.
func Schema(t testing.TB, key string) string {
	t.Helper()
	dsn := URL(t)
	sum := sha256.Sum256([]byte(t.Name() + "\x00" + key))
	name := "ciwh_" + hex.EncodeToString(sum[:10])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	mu.Lock()
	defer mu.Unlock()
	if !made[name] {
		// A schema left by an earlier run that was killed before its
		// cleanup must not leak its rows into this one.
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+name+` CASCADE; CREATE SCHEMA `+name); err != nil {
			t.Fatal(err)
		}
		made[name] = true
		t.Cleanup(func() {
			mu.Lock()
			delete(made, name) // a rerun (-count=N) makes it afresh
			mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if conn, err := pgx.Connect(ctx, dsn); err == nil {
				conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+name+` CASCADE`)
				conn.Close(ctx)
			}
		})
	}
	return WithSearchPath(t, dsn, name)
}

// WithSearchPath adds search_path to a URL connection string.
func WithSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Fatalf("%s must be a postgres:// URL", EnvVar)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
