// Package ciwebhook assembles the service: the webhook handler, the ledger
// it records into and the outbox worker that posts to Slack. The ciwebhook
// command is a thin wrapper around it; another Go program can mount it too:
//
//	svc, err := ciwebhook.New(ctx, ciwebhook.Options{})
//	if err != nil { ... }
//	defer svc.Close()
//	go svc.Run(ctx) // the Slack worker; returns when ctx is done
//	mux.Handle("/webhooks/github", svc)
//	mux.Handle("/webhooks/github/", svc)
package ciwebhook

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ciwebhook/ciwebhook/internal/config"
	"github.com/ciwebhook/ciwebhook/internal/githook"
	"github.com/ciwebhook/ciwebhook/internal/ledger"
	"github.com/ciwebhook/ciwebhook/internal/ledger/file"
	"github.com/ciwebhook/ciwebhook/internal/ledger/postgres"
	"github.com/ciwebhook/ciwebhook/internal/ledger/sqlite"
	"github.com/ciwebhook/ciwebhook/internal/metrics"
	"github.com/ciwebhook/ciwebhook/internal/notify"
	"github.com/ciwebhook/ciwebhook/internal/outbox"
	"github.com/ciwebhook/ciwebhook/internal/route"
	"github.com/ciwebhook/ciwebhook/internal/slack"
)

// Options are what an embedding program may supply; every field is optional.
type Options struct {
	// Getenv reads the configuration (DESIGN.md's variables); os.Getenv
	// when nil.
	Getenv func(string) string
	// Logger receives every log line; when nil, one is built from LOG_LEVEL
	// and LOG_FORMAT, writing to standard error.
	Logger *slog.Logger
	// Registry receives the metrics; a new one when nil.
	Registry *prometheus.Registry
	// HTTPClient posts to Slack; a client with sane timeouts when nil.
	HTTPClient *http.Client
}

// Service is one configured ciwebhook.
type Service struct {
	cfg     config.Config
	log     *slog.Logger
	store   ledger.Store // nil when disabled
	handler http.Handler
	worker  *outbox.Worker // nil when disabled
}

// New reads the configuration and opens the ledger. A bad setting is an
// error naming its variable.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	cfg, err := config.Load(opts.Getenv)
	if err != nil {
		return nil, err
	}
	routes, err := Routes(cfg, opts.Getenv)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = NewLogger(cfg.LogLevel, cfg.LogFormat)
	}
	s := &Service{cfg: cfg, log: log}
	if !cfg.Enabled {
		log.Info("webhooks disabled (ENABLE_WEBHOOKS=false): every route answers 404")
		s.handler = githook.Disabled()
		return s, nil
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		// A registry of our own also shows the process (go_goroutines, process_open_fds, ...).
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := metrics.New(opts.Registry)

	s.store, err = OpenLedger(ctx, cfg)
	if err != nil {
		return nil, err
	}
	dests, slackMode := Destinations(cfg, routes, opts.HTTPClient)
	warnOrphans(ctx, s.store, dests, log)
	if cfg.SlackBotToken != "" && !slices.ContainsFunc(routes, func(r route.Route) bool { return r.Channel != "" }) {
		log.Warn("SLACK_BOT_TOKEN is set but no route in CONFIG_FILE names a channel; the token is not used")
	}
	s.worker = outbox.New(s.store, dests, m, log, outbox.Options{
		MaxAttempts: cfg.SlackMaxAttempts, RetryBase: cfg.SlackRetryBase,
		Rate: cfg.SlackRate, Burst: cfg.SlackBurst,
	})
	secrets := make([][]byte, len(cfg.Secrets))
	for i, sec := range cfg.Secrets {
		secrets[i] = []byte(sec.Reveal())
	}
	filters := Filters(cfg)
	filters.Routes, filters.Fallback = routes, cfg.SlackWebhookURL != ""
	s.handler = githook.New(githook.Options{
		Secrets: secrets, MaxBodyBytes: cfg.MaxBodyBytes, NotifyPending: cfg.NotifyPending,
		Filters:      filters,
		Destinations: func() any { return s.worker.Statuses() },
		Backend:      cfg.LedgerBackend,
		SlackMode:    slackMode,
		Wake:         s.worker.Wake,
		Sources:      githook.Sources{Allowed: cfg.AllowedSources, Trusted: cfg.TrustedProxies},
	}, s.store, m, log)
	where := cfg.LedgerPath
	if cfg.LedgerBackend == config.BackendPostgres {
		where = "DATABASE_URL" // the URL itself is a secret
	}
	log.Info("ciwebhook ready", "ledger_backend", cfg.LedgerBackend, "ledger", where,
		"slack", slackMode, "routes", len(routes), "secrets", len(secrets))
	return s, nil
}

// Routes reads CONFIG_FILE, when set, and checks the routes against the
// rest of the settings. getenv expands ${NAME} in it.
func Routes(cfg config.Config, getenv func(string) string) ([]route.Route, error) {
	return routes(cfg, getenv, true)
}

// routes is Routes; needToken false skips the check that a channel route
// has SLACK_BOT_TOKEN, for a dry run that posts nothing.
func routes(cfg config.Config, getenv func(string) string, needToken bool) ([]route.Route, error) {
	if cfg.ConfigFile == "" {
		return nil, nil
	}
	routes, err := route.Load(cfg.ConfigFile, getenv)
	if err != nil {
		return nil, fmt.Errorf("CONFIG_FILE: %w", err)
	}
	for _, r := range routes {
		if r.Name == metrics.DefaultDestination {
			return nil, fmt.Errorf("CONFIG_FILE: %s:%d: route name %q is kept for SLACK_WEBHOOK_URL's destination; choose another", cfg.ConfigFile, r.Line, r.Name)
		}
		if needToken && r.Channel != "" && cfg.SlackBotToken == "" {
			return nil, fmt.Errorf("CONFIG_FILE: %s:%d: route %s names a channel, which needs SLACK_BOT_TOKEN; set it, or give the route a webhook_url", cfg.ConfigFile, r.Line, r.Name)
		}
	}
	return routes, nil
}

// Destinations are where messages go: the default destination (the
// SLACK_WEBHOOK_URL, or the log) and one per route. mode is the default
// destination's, as health reports it ("webhook" or "log-only"); health
// lists the routes' destinations beside it.
func Destinations(cfg config.Config, routes []route.Route, client *http.Client) (dests []outbox.Destination, mode string) {
	// nil gives the Slack clients their defaults: a transport of their
	// own, a timeout, and no redirects followed.
	def := outbox.Destination{}
	mode = "log-only"
	if cfg.SlackWebhookURL != "" {
		def.Webhook = slack.NewWebhook(cfg.SlackWebhookURL.Reveal(), client)
		mode = "webhook"
	}
	dests = append(dests, def)
	var api *slack.API
	for _, r := range routes {
		d := outbox.Destination{Name: r.Name}
		if r.Channel != "" {
			if api == nil {
				api = slack.NewAPI(cfg.SlackAPIURL, cfg.SlackBotToken.Reveal(), client)
			}
			d.Chat, d.Channel = api, r.Channel
		} else {
			d.Webhook = slack.NewWebhook(r.WebhookURL.Reveal(), client)
		}
		dests = append(dests, d)
	}
	return dests, mode
}

// orphanScan bounds how many owed rows start-up looks at for warnOrphans.
const orphanScan = 10_000

// warnOrphans logs the rows owed to a destination no route names any more
// (a route renamed or removed while its messages waited): no lane reads
// them, so they stay owed until the route is back, and an operator must
// hear of it.
func warnOrphans(ctx context.Context, st ledger.Store, dests []outbox.Destination, log *slog.Logger) {
	rows, err := st.List(ctx, ledger.Pending, orphanScan)
	if err != nil {
		log.Warn("cannot look for messages owed to removed routes", "err", err)
		return
	}
	known := map[string]bool{}
	for _, d := range dests {
		known[d.Name] = true
	}
	orphans := map[string]int{}
	for _, r := range rows {
		if !known[r.Destination] {
			orphans[r.Destination]++
		}
	}
	for _, name := range slices.Sorted(maps.Keys(orphans)) {
		log.Warn("messages are owed to a route CONFIG_FILE no longer names; they are posted when the route is back",
			"route", name, "owed", orphans[name])
	}
}

// DryRunRoutes is Routes for a command that posts nothing (ciwebhook
// route): it needs no SLACK_BOT_TOKEN, so a dry run needs no secret.
func DryRunRoutes(cfg config.Config, getenv func(string) string) ([]route.Route, error) {
	return routes(cfg, getenv, false)
}

// Filters are the notify filters a configuration sets.
func Filters(cfg config.Config) notify.Filters {
	return notify.Filters{
		Repos: cfg.AllowedRepos, Branches: cfg.AllowedBranches, IgnoreActors: cfg.IgnoreActors,
		AllowedWorkflows: cfg.AllowedWorkflows, IgnoredWorkflows: cfg.IgnoredWorkflows,
		Mentions: cfg.SlackMentions, Mode: cfg.NotifyMode,
	}
}

// OpenLedger opens the ledger the configuration names. Operator commands
// use it too, so they read and write the same rows as the server.
func OpenLedger(ctx context.Context, cfg config.Config) (ledger.Store, error) {
	var (
		st  ledger.Store
		err error
	)
	switch cfg.LedgerBackend {
	case config.BackendPostgres:
		if st, err = postgres.Open(ctx, cfg.DatabaseURL.Reveal(), cfg.LedgerLimit); err != nil {
			return nil, fmt.Errorf("DATABASE_URL: cannot open the postgres ledger: %w", err)
		}
		return st, nil
	case config.BackendFile:
		st, err = file.Open(cfg.LedgerPath, cfg.LedgerLimit)
	default:
		st, err = sqlite.Open(ctx, cfg.LedgerPath, cfg.LedgerLimit)
	}
	if err != nil {
		return nil, fmt.Errorf("LEDGER_PATH: cannot open the %s ledger: %w", cfg.LedgerBackend, err)
	}
	return st, nil
}

// NewLogger returns the slog logger LOG_LEVEL and LOG_FORMAT describe.
func NewLogger(level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// ServeHTTP serves /webhooks/github and its health and metrics routes.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Run posts owed Slack messages until ctx is done, then returns once the
// attempt under way (if any) is finished and recorded.
func (s *Service) Run(ctx context.Context) {
	if s.worker == nil {
		<-ctx.Done()
		return
	}
	s.worker.Run(ctx)
}

// Close closes the ledger. Call it after Run has returned and the HTTP
// server has stopped.
func (s *Service) Close() error {
	if s.store == nil {
		return nil
	}
	return s.store.Close()
}

// Addr is the configured listen address (ADDR, or :PORT).
func (s *Service) Addr() string { return s.cfg.Addr }

// Logger is the service's logger.
func (s *Service) Logger() *slog.Logger { return s.log }
