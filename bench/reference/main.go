// Command reference is the yardstick of bench/run.sh: a stateless webhook
// server that does the least a correct receiver must do. It reads the body
// (up to 2 MiB), verifies X-Hub-Signature-256 under GITHUB_WEBHOOK_SECRET,
// decodes the JSON into a map[string]any, and answers 202 with a JSON body.
// It stores nothing, so it loses everything a crash interrupts: ciwebhook
// is measured against it to show what durability costs.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

const maxBody = 2 << 20

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()
	secret := os.Getenv("GITHUB_WEBHOOK_SECRET")
	if secret == "" {
		fmt.Fprintln(os.Stderr, "reference: GITHUB_WEBHOOK_SECRET is required")
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/github", handler([]byte(secret)))
	// The same timeouts as ciwebhook serve, so neither side is favoured.
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	log.Fatal(srv.ListenAndServe())
}

func handler(secret []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			reply(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large or unreadable"})
			return
		}
		hexSig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
		want, err := hex.DecodeString(hexSig)
		if !ok || err != nil {
			reply(w, http.StatusUnauthorized, map[string]string{"error": "bad signature header"})
			return
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if !hmac.Equal(mac.Sum(nil), want) {
			reply(w, http.StatusUnauthorized, map[string]string{"error": "signature does not match"})
			return
		}
		var payload map[string]any
		if err := json.Unmarshal(body, &payload); err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": "payload is not a JSON object"})
			return
		}
		reply(w, http.StatusAccepted, map[string]string{"status": "queued", "delivery": r.Header.Get("X-GitHub-Delivery")})
	}
}

func reply(w http.ResponseWriter, status int, body map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}
