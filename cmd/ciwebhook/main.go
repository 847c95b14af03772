// Command ciwebhook receives GitHub webhooks and tells Slack about CI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/ciwebhook/ciwebhook"
)

const usage = `ciwebhook receives GitHub webhooks and posts CI results to Slack.

Usage:
  ciwebhook [serve]                          run the server (configured by environment variables; see README)
  ciwebhook preview --event E --file F       print the Slack message a payload would produce
  ciwebhook route --event E --file F         print which CONFIG_FILE routes a payload matches, and their messages
  ciwebhook send --event E --file F          sign a payload and post it to a running server
  ciwebhook ledger list|show|retry           read the ledger, requeue failed messages
  ciwebhook version                          print the version

Run "ciwebhook <command> --help" for a command's flags.
`

func main() {
	// Signals become a context here, so the rest of the program can be
	// started and stopped by tests without them.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stderr)
	case "preview":
		return preview(args, stdout, stderr)
	case "route":
		return route(args, stdout, stderr)
	case "send":
		return send(ctx, args, os.Getenv, stdout, stderr)
	case "ledger":
		return ledgerCmd(ctx, args, os.Getenv, stdout, stderr)
	case "version":
		return version(args, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ciwebhook: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// parse parses a subcommand's flags; ok false means exit with code.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ciwebhook %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: ciwebhook serve\n\nRuns the server. It takes no flags: it is configured by environment variables (see README).\n")
	}
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	svc, err := ciwebhook.New(ctx, ciwebhook.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "ciwebhook: %v\n", err)
		return 1
	}
	log := svc.Logger()
	defer func() {
		if err := svc.Close(); err != nil {
			log.Error("closing the ledger", "err", err)
		}
	}()

	mux := http.NewServeMux()
	mux.Handle("/webhooks/github", svc)
	mux.Handle("/webhooks/github/", svc)
	srv := &http.Server{
		Addr:    svc.Addr(),
		Handler: mux,
		// Bounded at every stage, so slow or idle clients cannot hold
		// connections: GitHub sends a whole delivery in well under these.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		log.Error("cannot listen", "addr", srv.Addr, "err", err)
		return 1
	}
	log.Info("listening", "addr", ln.Addr().String())

	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { svc.Run(workerCtx) })

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	code := 0
	select {
	case err := <-served:
		log.Error("server stopped", "err", err)
		code = 1
	case <-ctx.Done():
		log.Info("shutting down: finishing requests in flight")
	}
	// Stop taking deliveries first, so every answered one is recorded,
	// then let the worker finish its attempt under way.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	stopWorker()
	wg.Wait()
	log.Info("stopped")
	return code
}

func version(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, "Usage: ciwebhook version\n\nPrints the version, commit and Go version.\n") }
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	v, commit, goVersion := "(devel)", "unknown", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		if info.Main.Version != "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	fmt.Fprintf(stdout, "ciwebhook %s (commit %s, %s)\n", v, commit, goVersion)
	return 0
}
